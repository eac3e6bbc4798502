"""pyg-unimol2: Uni-Mol2 for PyTorch Geometric."""
__version__ = '0.1.0'
