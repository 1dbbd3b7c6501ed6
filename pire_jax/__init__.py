"""pire_jax: adversarial queries against content-based image retrieval, in JAX.

Reimplements Liu, Zhao and Larson, "Who's Afraid of Adversarial Queries? The Impact
of Image Modifications on Content-based Image Retrieval", ACM ICMR 2019: the PIRE
attack, the neural (GeM), SIFT bag-of-words with Hamming Embedding, CEDD and GIST
retrieval systems, and the SIFT keypoint removal and injection attacks.
"""

__version__ = "0.1.0"
