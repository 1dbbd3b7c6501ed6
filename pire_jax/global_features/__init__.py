"""Global image descriptors for retrieval: CEDD and GIST."""
