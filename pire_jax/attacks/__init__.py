"""Query modifications: the PIRE attack and the SIFT keypoint attacks."""
