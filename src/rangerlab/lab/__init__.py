"""The lab: experiments that test the lecture's claims on real data, and the report they produce.

This package is the only part of rangerlab that needs the ``lab`` extra (matplotlib, scikit-learn,
numpy, tqdm); the optimizer library itself depends on torch alone. Run it with ``rangerlab run``.
"""
