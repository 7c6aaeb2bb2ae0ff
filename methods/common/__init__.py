"""Neural toolkit shared by all methods (import the sub-modules; this package imports nothing heavy).

- ``methods.common.backbones``: ``FeatureExtractor`` interface, DINOv2-architecture ViT with official
  checkpoint loading (torch.hub and Hugging Face layouts), ``vit_tiny_scratch``, ``create_backbone``.
- ``methods.common.text``: ``TextEncoder`` interface, CLIP text transformer + CLIP BPE tokenizer,
  ``hashed_bow`` offline encoder, ``create_text_encoder``.
- ``methods.common.blocks``: attention, pre-norm transformer layers, AdaLN-Zero / AdaNorm-Zero,
  DPT decoder, multi-scale deformable attention, GeM pooling (losses re-exported).
- ``methods.common.losses``: focal, dice, Tversky, soft IoU, Laplace NLL.
- ``methods.common.checkpoint``: safe state-dict IO (safetensors, ``weights_only`` torch files),
  strict key checking, weight-file resolution.
- ``methods.common.rng``: explicit seeding of module initialisation without touching global RNG state.
- ``methods.common.training``: ``TrainConfig`` (+ STORM paper presets), warm-up + cosine schedules,
  ``Trainer`` with gradient clipping, AMP on CUDA, safe resumable checkpoints, seeded data loading,
  callbacks and MLflow logging.
- ``methods.common.augment``: seeded joint image/mask/depth augmentations (STORM's appendix list).
- ``methods.common.registration``: ``PoseRegistrar`` (render-and-compare + ICP registration and
  tracking; the role FoundationPose plays in STORM).
"""
