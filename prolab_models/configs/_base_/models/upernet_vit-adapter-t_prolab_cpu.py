# The CPU model: ViT-Adapter-T (192 wide) trained from scratch in minutes. Differences from the
# paper's model, all for CPU time: two interaction blocks (no extra extractors), 2 sampling
# points, 128-channel heads; plain BN (one process), its statistics fixed by PreciseBNHook.
_base_ = ['./upernet_vit-adapter-b_prolab.py']
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    backbone=dict(
        arch='tiny',
        pretrained=None,
        deform_num_heads=6,
        deform_ratio=1.0,
        n_points=2,
        interaction_indexes=[[0, 5], [6, 11]],
        extra_extractor=False,
        drop_path_rate=0.1,
        norm_cfg=norm_cfg),
    decode_head=dict(in_channels=[192, 192, 192, 192], channels=128, norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels=192, channels=64, norm_cfg=norm_cfg),
    test_cfg=dict(_delete_=True, mode='whole'))
