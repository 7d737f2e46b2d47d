"""The DARTS CNN cell spaces (``darts``, ``darts-nonone``, ``nasp12``): ops, cells, supernet, genotype, network."""
