"""ViT-Adapter (Chen et al., ICLR 2023) on timm's VisionTransformer: a plain ViT made dense.

A convolutional *spatial prior module* gives 1/8, 1/16 and 1/32 features; *interaction
blocks* pass information both ways around groups of ViT blocks with multi-scale deformable
attention: the injector lets the ViT tokens (1/16) attend to the multi-scale features, the
extractor lets the multi-scale features attend to the ViT tokens (then a ConvFFN). The output
is a 4-level pyramid (1/4 by a deconvolution, 1/8, 1/16, 1/32), each normalised, for UPerNet.

Build by name like timm: ``vit_adapter_tiny()``, or from a config
``dict(type='ViTAdapter', arch='tiny', ...)``; keyword arguments override the arch settings.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmseg.registry import MODELS
from timm.layers import DropPath, resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from prolab_models.backbones.ms_deform_attn import MSDeformAttn
from prolab_models.backbones.pretrained import load_pretrained

LayerNorm = partial(nn.LayerNorm, eps=1e-6)
QUARTERS = [[0, 2], [3, 5], [6, 8], [9, 11]]

# The published adapter settings (ViT-Adapter's segmentation configs); DeiT-B is ProLab's.
ARCH_SETTINGS: dict[str, dict] = {
    "tiny": dict(embed_dim=192, depth=12, num_heads=3, deform_num_heads=6, drop_path_rate=0.1,
                 deform_ratio=1.0, interaction_indexes=QUARTERS),
    "small": dict(embed_dim=384, depth=12, num_heads=6, deform_num_heads=6, drop_path_rate=0.2,
                  deform_ratio=1.0, interaction_indexes=QUARTERS),
    "base": dict(embed_dim=768, depth=12, num_heads=12, deform_num_heads=12, drop_path_rate=0.3,
                 deform_ratio=0.5, interaction_indexes=QUARTERS),
}


def _reference_points(shapes: Sequence[tuple[int, int]], device: torch.device) -> torch.Tensor:
    """Pixel centres of each level, normalised to [0, 1] as (x, y): (1, sum h*w, 1, 2)."""
    points = []
    for h, w in shapes:
        y, x = torch.meshgrid(
            torch.linspace(0.5, h - 0.5, h, device=device) / h,
            torch.linspace(0.5, w - 0.5, w, device=device) / w,
            indexing="ij",
        )
        points.append(torch.stack((x.reshape(-1), y.reshape(-1)), -1))
    return torch.cat(points)[None, :, None]


def _levels(shapes: Sequence[tuple[int, int]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``spatial_shapes`` and ``level_start_index`` as the MSDA operator wants them."""
    spatial_shapes = torch.as_tensor(shapes, dtype=torch.long, device=device)
    sizes = spatial_shapes.prod(1)
    return spatial_shapes, torch.cat((sizes.new_zeros(1), sizes.cumsum(0)[:-1]))


class DeformInputs:
    """Where the injector's and extractor's queries look, for an input of size (h, w).

    Injector: queries are the 1/16 ViT tokens, values the 1/8, 1/16, 1/32 features.
    Extractor: queries are the multi-scale features, values the 1/16 ViT tokens.
    """

    def __init__(self, h: int, w: int, device: torch.device) -> None:
        pyramid = [(h // 8, w // 8), (h // 16, w // 16), (h // 32, w // 32)]
        vit = [(h // 16, w // 16)]
        self.pyramid_sizes = [a * b for a, b in pyramid]
        self.injector = (_reference_points(vit, device), *_levels(pyramid, device))
        self.extractor = (_reference_points(pyramid, device), *_levels(vit, device))


class ConvFFN(nn.Module):
    """MLP with a 3x3 depth-wise convolution applied to each pyramid level in its own grid."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """x (N, S, dim) holds the 1/8, 1/16, 1/32 levels; (h, w) is the 1/16 grid."""
        x = self.fc1(x)
        n, _, c = x.shape
        grids = [(2 * h, 2 * w), (h, w), (h // 2, w // 2)]
        levels = x.split([a * b for a, b in grids], dim=1)
        x = torch.cat(
            [self.dwconv(lvl.transpose(1, 2).reshape(n, c, a, b)).flatten(2).transpose(1, 2)
             for lvl, (a, b) in zip(levels, grids)],
            dim=1,
        )
        return self.drop(self.fc2(self.drop(self.act(x))))


class Injector(nn.Module):
    """ViT tokens attend to the multi-scale features; the update is gated by ``gamma``."""

    def __init__(self, dim: int, n_heads: int, n_points: int, deform_ratio: float, init_values: float) -> None:
        super().__init__()
        self.query_norm, self.feat_norm = LayerNorm(dim), LayerNorm(dim)
        self.attn = MSDeformAttn(dim, n_levels=3, n_heads=n_heads, n_points=n_points, ratio=deform_ratio)
        self.gamma = nn.Parameter(torch.full((dim,), float(init_values)))

    def forward(self, x: torch.Tensor, c: torch.Tensor, deform: DeformInputs) -> torch.Tensor:
        return x + self.gamma * self.attn(self.query_norm(x), deform.injector[0], self.feat_norm(c), *deform.injector[1:])


class Extractor(nn.Module):
    """Multi-scale features attend to the ViT tokens, then a ConvFFN."""

    def __init__(self, dim: int, n_heads: int, n_points: int, deform_ratio: float, cffn_ratio: float,
                 drop_path: float) -> None:
        super().__init__()
        self.query_norm, self.feat_norm = LayerNorm(dim), LayerNorm(dim)
        self.attn = MSDeformAttn(dim, n_levels=1, n_heads=n_heads, n_points=n_points, ratio=deform_ratio)
        self.ffn_norm = LayerNorm(dim)
        self.ffn = ConvFFN(dim, int(dim * cffn_ratio))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, c: torch.Tensor, x: torch.Tensor, deform: DeformInputs, h: int, w: int) -> torch.Tensor:
        c = c + self.attn(self.query_norm(c), deform.extractor[0], self.feat_norm(x), *deform.extractor[1:])
        return c + self.drop_path(self.ffn(self.ffn_norm(c), h, w))


class InteractionBlock(nn.Module):
    """inject -> a group of ViT blocks -> extract (twice more in the last block: ``extra``)."""

    def __init__(self, dim: int, n_heads: int, n_points: int, deform_ratio: float, cffn_ratio: float,
                 drop_path: float, init_values: float, extra: bool) -> None:
        super().__init__()
        self.injector = Injector(dim, n_heads, n_points, deform_ratio, init_values)
        extractor = partial(Extractor, dim, n_heads, n_points, deform_ratio, cffn_ratio, drop_path)
        self.extractors = nn.ModuleList([extractor() for _ in range(3 if extra else 1)])

    def forward(self, x: torch.Tensor, c: torch.Tensor, blocks: nn.Sequential, deform: DeformInputs,
                h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = blocks(self.injector(x, c, deform))
        for extractor in self.extractors:
            c = extractor(c, x, deform, h, w)
        return x, c


class SpatialPriorModule(nn.Module):
    """A ResNet-like stem: 1/4, 1/8, 1/16, 1/32 features, each projected to the ViT width."""

    def __init__(self, inplanes: int, dim: int, norm_cfg: dict) -> None:
        super().__init__()

        def conv(cin: int, cout: int, stride: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), build_norm_layer(norm_cfg, cout)[1],
                    nn.ReLU(inplace=True)]

        self.stem = nn.Sequential(*conv(3, inplanes, 2), *conv(inplanes, inplanes, 1), *conv(inplanes, inplanes, 1),
                                  nn.MaxPool2d(3, 2, 1))
        self.conv2 = nn.Sequential(*conv(inplanes, 2 * inplanes, 2))
        self.conv3 = nn.Sequential(*conv(2 * inplanes, 4 * inplanes, 2))
        self.conv4 = nn.Sequential(*conv(4 * inplanes, 4 * inplanes, 2))
        self.fc1 = nn.Conv2d(inplanes, dim, 1)
        self.fc2 = nn.Conv2d(2 * inplanes, dim, 1)
        self.fc3 = nn.Conv2d(4 * inplanes, dim, 1)
        self.fc4 = nn.Conv2d(4 * inplanes, dim, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """-> c1 (N, dim, H/4, W/4) as a map; c2, c3, c4 as tokens (N, h*w, dim)."""
        c1 = self.stem(x)
        c2 = self.conv2(c1)
        c3 = self.conv3(c2)
        c4 = self.conv4(c3)
        tokens = [fc(c).flatten(2).transpose(1, 2) for fc, c in ((self.fc2, c2), (self.fc3, c3), (self.fc4, c4))]
        return (self.fc1(c1), *tokens)


@MODELS.register_module()
class ViTAdapter(BaseModule):
    """ViT-Adapter backbone.

    Args:
        arch: ``tiny``, ``small`` or ``base`` (DeiT sizes); the settings of ``ARCH_SETTINGS``.
        pretrained: a timm model name (downloaded by timm) or a checkpoint file of a timm/DeiT
            ViT; loaded by ``init_weights``. ``None``: random init (offline default).
        interaction_indexes: the ViT blocks each interaction block wraps, first and last.
        norm_cfg: the norm of the spatial prior module and of the four outputs.
        Other arguments: ViT-Adapter's names; keyword arguments override the arch settings.
    """

    def __init__(
        self,
        arch: str = "base",
        pretrained: str | None = None,
        pretrain_size: int = 224,
        patch_size: int = 16,
        embed_dim: int | None = None,
        depth: int | None = None,
        num_heads: int | None = None,
        mlp_ratio: float = 4.0,
        drop_path_rate: float | None = None,
        conv_inplane: int = 64,
        n_points: int = 4,
        deform_num_heads: int | None = None,
        deform_ratio: float | None = None,
        cffn_ratio: float = 0.25,
        init_values: float = 0.0,
        interaction_indexes: Sequence[Sequence[int]] | None = None,
        extra_extractor: bool = True,
        add_vit_feature: bool = True,
        norm_cfg: dict | None = None,
        init_cfg: dict | None = None,
    ) -> None:
        super().__init__(init_cfg)
        if arch not in ARCH_SETTINGS:
            raise ValueError(f"ViTAdapter: unknown arch {arch!r}; known: {sorted(ARCH_SETTINGS)}")
        given = dict(embed_dim=embed_dim, depth=depth, num_heads=num_heads, deform_num_heads=deform_num_heads,
                     drop_path_rate=drop_path_rate, deform_ratio=deform_ratio,
                     interaction_indexes=interaction_indexes)
        s = {**ARCH_SETTINGS[arch], **{k: v for k, v in given.items() if v is not None}}
        dim = s["embed_dim"]
        self.pretrained = pretrained
        self.pretrain_grid = (pretrain_size // patch_size, pretrain_size // patch_size)
        self.interaction_indexes = [list(i) for i in s["interaction_indexes"]]
        if self.interaction_indexes[-1][-1] >= s["depth"]:
            raise ValueError(f"ViTAdapter: interaction_indexes {self.interaction_indexes} exceed depth {s['depth']}")
        self.add_vit_feature = add_vit_feature

        # The plain ViT: timm's, of which the adapter keeps the patch embedding, the position
        # embedding (its class-token slot unused) and the blocks, under timm's names.
        vit = VisionTransformer(img_size=pretrain_size, patch_size=patch_size, embed_dim=dim, depth=s["depth"],
                                num_heads=s["num_heads"], mlp_ratio=mlp_ratio, qkv_bias=True, num_classes=0,
                                drop_path_rate=s["drop_path_rate"], dynamic_img_size=True)
        self.patch_embed, self.pos_embed, self.blocks = vit.patch_embed, vit.pos_embed, vit.blocks
        self.num_prefix_tokens = vit.num_prefix_tokens

        norm_cfg = norm_cfg or dict(type="SyncBN", requires_grad=True)
        self.level_embed = nn.Parameter(torch.zeros(3, dim))
        self.spm = SpatialPriorModule(conv_inplane, dim, norm_cfg)
        self.interactions = nn.ModuleList(
            InteractionBlock(dim, s["deform_num_heads"], n_points, s["deform_ratio"], cffn_ratio,
                             s["drop_path_rate"], init_values,
                             extra=extra_extractor and i == len(self.interaction_indexes) - 1)
            for i in range(len(self.interaction_indexes))
        )
        self.up = nn.ConvTranspose2d(dim, dim, 2, 2)
        self.norms = nn.ModuleList(build_norm_layer(norm_cfg, dim)[1] for _ in range(4))
        self._init_adapter()

    def _init_adapter(self) -> None:
        """ViT-Adapter's init of the new parts (the ViT keeps timm's)."""
        for module in (self.spm, self.interactions, self.up):
            for m in module.modules():
                if isinstance(m, nn.Linear):
                    nn.init.trunc_normal_(m.weight, std=0.02)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
                elif isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                    fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                    nn.init.normal_(m.weight, 0, (2.0 / fan_out) ** 0.5)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
        for m in self.interactions.modules():
            if isinstance(m, MSDeformAttn):
                m.reset_parameters()
        nn.init.normal_(self.level_embed)

    def init_weights(self) -> None:
        """Load the pretrained ViT if one is named (mmengine calls this before training only)."""
        if self.pretrained is None:
            return
        state = load_pretrained(self.pretrained)
        own = self.state_dict()
        wanted = [k for k in own if k.startswith(("patch_embed.", "blocks.")) or k == "pos_embed"]
        absent = [k for k in wanted if k not in state]
        if absent:
            raise ValueError(f"ViTAdapter: pretrained {self.pretrained!r} lacks {len(absent)} ViT weights, "
                             f"e.g. {absent[:3]}")
        if state["pos_embed"].shape != own["pos_embed"].shape:
            state["pos_embed"] = resample_abs_pos_embed(state["pos_embed"], list(self.pretrain_grid),
                                                        num_prefix_tokens=self.num_prefix_tokens)
        self.load_state_dict({k: state[k] for k in wanted}, strict=False)
        print_log(f"ViTAdapter: loaded {len(wanted)} ViT tensors from {self.pretrained}", logger="current")

    def _pos_embed(self, h: int, w: int) -> torch.Tensor:
        grid = self.pos_embed[:, self.num_prefix_tokens:]
        grid = grid.reshape(1, *self.pretrain_grid, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)
        return grid.flatten(2).transpose(1, 2)

    def forward(self, img: torch.Tensor) -> list[torch.Tensor]:
        """img (N, 3, H, W), H and W multiples of 32 -> [1/4, 1/8, 1/16, 1/32] maps of width dim."""
        if img.shape[-1] % 32 or img.shape[-2] % 32:
            raise ValueError(f"ViTAdapter: input size {tuple(img.shape[-2:])} is not a multiple of 32 "
                             "(pad it: data_preprocessor size_divisor=32)")
        deform = DeformInputs(img.shape[-2], img.shape[-1], img.device)
        c1, c2, c3, c4 = self.spm(img)
        c = torch.cat([c2 + self.level_embed[0], c3 + self.level_embed[1], c4 + self.level_embed[2]], dim=1)

        x = self.patch_embed(img)  # (N, h, w, dim): dynamic_img_size keeps the grid
        n, h, w, dim = x.shape
        x = x.flatten(1, 2) + self._pos_embed(h, w)

        vit_maps = []
        for (first, last), block in zip(self.interaction_indexes, self.interactions):
            x, c = block(x, c, self.blocks[first:last + 1], deform, h, w)
            vit_maps.append(x.transpose(1, 2).reshape(n, dim, h, w))

        c2, c3, c4 = c.split(deform.pyramid_sizes, dim=1)
        c2 = c2.transpose(1, 2).reshape(n, dim, 2 * h, 2 * w)
        c3 = c3.transpose(1, 2).reshape(n, dim, h, w)
        c4 = c4.transpose(1, 2).reshape(n, dim, h // 2, w // 2)
        c1 = self.up(c2) + c1
        outs = [c1, c2, c3, c4]
        if self.add_vit_feature:
            # level i gets the ViT tokens after interaction block i (with fewer than four
            # blocks, earlier levels share the earlier blocks' tokens)
            scales = [4.0, 2.0, 1.0, 0.5]
            for i, scale in enumerate(scales):
                v = vit_maps[i * len(vit_maps) // 4]
                if scale != 1.0:
                    v = F.interpolate(v, scale_factor=scale, mode="bilinear", align_corners=False)
                outs[i] = outs[i] + v
        return [norm(o) for norm, o in zip(self.norms, outs)]


def _register(arch: str):
    def build(**kwargs) -> ViTAdapter:
        return ViTAdapter(arch=arch, **kwargs)

    build.__name__ = f"vit_adapter_{arch}"
    build.__doc__ = f"ViT-Adapter-{arch[0].upper()} ({ARCH_SETTINGS[arch]['embed_dim']} wide)."
    return MODELS.register_module(name=build.__name__, module=build)


vit_adapter_tiny = _register("tiny")
vit_adapter_small = _register("small")
vit_adapter_base = _register("base")
