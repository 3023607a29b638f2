"""The viewer's two calls to the Kubernetes API server: TokenReview and SubjectAccessReview.

The client's Configuration (where the API server is, with which credentials) is made by the
entry point with kubemill's one kubeconfig loader (`kubemill.operator.client.connect`: a
kubeconfig, or the pod's ServiceAccount), and passed in; the viewer never loads credentials
itself. The official client is imported when a KubeReviews is made, not when this module is.
The viewer's ServiceAccount needs `create` on exactly these two resources
(deploy/components/viewer/rbac.yaml).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = ["KubeReviews"]

#: Where each review is created.
PATHS = {
    "TokenReview": "/apis/authentication.k8s.io/v1/tokenreviews",
    "SubjectAccessReview": "/apis/authorization.k8s.io/v1/subjectaccessreviews",
}
#: Seconds to connect and to wait for an answer: a person's request waits for the review.
TIMEOUT = (5.0, 10.0)


class KubeReviews:
    def __init__(self, configuration: Any) -> None:
        from kubernetes import client

        self._api = client.ApiClient(configuration)

    def create(self, kind: str, body: Mapping[str, Any]) -> Mapping[str, Any]:
        response = self._api.call_api(
            PATHS[kind],
            "POST",
            header_params={"Accept": "application/json", "Content-Type": "application/json"},
            body=dict(body),
            auth_settings=["BearerToken"],
            _preload_content=False,
            _return_http_data_only=True,
            _request_timeout=TIMEOUT,
        )
        answer = json.loads(response.data)
        if not isinstance(answer, dict):
            raise ValueError(f"{kind}: the API server answered {type(answer).__name__}")
        return answer

    def close(self) -> None:
        self._api.close()
