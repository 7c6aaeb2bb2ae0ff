"""STORM (Deng et al.): Segment, Track, and Object Re-Localization from a single iMage.

``references`` (reference images), ``som`` (HSFA segmentation with language injection), ``model3d``
(3D model from references), ``tom`` (tracking-loss classifier), ``config`` and ``method``
(``StormMethod``, registered as ``storm``).
"""
