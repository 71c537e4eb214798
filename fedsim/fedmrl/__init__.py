"""FedMRL (Sahoo et al., arXiv 2407.05800): QMIX-chosen proximal terms, fairness loss, SOM weights."""
