"""needle: CNNs, their exact fully-connected embeddings (eFCN, eLCN), and the relax protocol of
d'Ascoli et al., "Finding the Needle in the Haystack with Convolutions" (NeurIPS 2019)."""
