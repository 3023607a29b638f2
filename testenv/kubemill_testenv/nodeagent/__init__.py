"""A node agent that runs pods from their images under runc and reports status like a kubelet.

It registers one Ready Node, binds every pending pod that asks for the default scheduler (and
whose nodeSelector the node satisfies), and runs each container from its image with runc 1.1
(``runtime.py``), under an OCI spec built the way containerd builds it (``ocispec.py``): the
image's root file system (an overlay over the shared, never-written image store), its
entrypoint, environment, user and working directory, the pod's volumes, environment and
security context, capabilities, seccomp ``RuntimeDefault``, memory and CPU limits in a cgroup per
container run. Probes (``probes.py``) decide ``started``/``ready`` and liveness restarts. Logs are
kept per container and served on a kubelet-style HTTPS endpoint, so ``kubectl logs`` works.

Images are never pulled: ``--images`` names a JSON file mapping image references to folders of
the local store (``rootfs/`` and the OCI image ``config.json``), written by ``make images``; any
other image waits in ``ErrImagePull``/``ImagePullBackOff``.
Not modelled: pod networking (no network namespace: pods share the host network, and the
``kubernetes`` Service is reached at the API server's loopback address), Services,
PersistentVolumeClaims, ``kubectl exec``/``attach``/``port-forward``.

Modules: ``agent`` (the node: registration, binding, the pod watch), ``pod`` (one pod's
lifecycle), ``spawning`` (runc processes: start, stop, reap), ``volumes`` (what a container
sees, its OCI spec), ``status`` (the pod status), ``events``, ``images`` (the local store),
``logs`` (CRI log files and the ``/containerLogs`` server), ``model`` (shared types). Started as
``python -P -m kubemill_testenv.nodeagent`` (``__main__``).
"""
