"""needle: CNNs, their exact fully-connected embeddings (eFCN, eLCN), and the relax protocol of
d'Ascoli et al., "Finding the Needle in the Haystack with Convolutions" (NeurIPS 2019)."""

import os

# Ask PyTorch's CPU allocator for transparent huge pages on large tensors (>= 2 MB). Every training
# step allocates fresh multi-megabyte activations and gradients, and on 4 KB pages their first
# touch page-faults once per page; huge pages cut that to one fault per 2 MB. PyTorch reads the
# variable at its first allocation, so it is set here, before any needle module imports torch;
# setdefault leaves a user's own setting alone. No effect where the kernel's THP mode is "never",
# or on GPU memory.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
