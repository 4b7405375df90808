"""Model serving.

`server`, `pool`, `generate` and `incremental` run in the serving process (they import
torch); `supervisor`, `client` and `protocol` are the API process's side of it and must
stay free of torch, so nothing is imported here.
"""
