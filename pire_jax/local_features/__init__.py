"""Local features for retrieval: SIFT, visual codebook, Hamming Embedding and the inverted file."""
