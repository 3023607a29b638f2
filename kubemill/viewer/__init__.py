"""`kubemill view`: a read-only web viewer of the notebooks kubemill writes to a folder or S3.

Modules: `paths` (URL paths and store keys, pure), `listing` (sorting and paging a folder,
pure), `contents` (Jupyter contents-API models, pure), `render` (a notebook as HTML, pure),
`storage` (the read-only store over a folder or an S3 prefix), `cache` (rendered pages on
disk), `app` (the aiohttp application). Nothing is imported here, so `kubemill --help` and the
runner never pay for aiohttp.
"""
