"""SAM's ViT image encoder (ViT-B/L/H): windowed attention, a few global blocks, a conv neck.

Module and parameter names follow the official checkpoints (``patch_embed.proj``,
``pos_embed``, ``blocks.N.{norm1,attn.qkv,attn.proj,attn.rel_pos_h,attn.rel_pos_w,norm2,
mlp.lin1,mlp.lin2}``, ``neck.0..3``) so those files load with a strict ``load_state_dict``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sam_viz.modeling.common import (
    MASK_CHUNK_ELEMENTS,
    LayerNorm2d,
    MLPBlock,
    attention,
    can_work_in_place,
    tracing,
    window_partition,
    window_unpartition,
)


class ImageEncoderViT(nn.Module):
    """Vision transformer that turns a normalised, padded image into a 256-channel embedding.

    Args:
        img_size: Side of the square model input in pixels.
        patch_size: Side of one patch; the embedding grid is ``img_size // patch_size``.
        in_chans: Input image channels.
        embed_dim: Transformer width.
        depth: Number of transformer blocks.
        num_heads: Attention heads per block.
        mlp_ratio: MLP hidden width as a multiple of ``embed_dim``.
        out_chans: Channels of the output embedding.
        qkv_bias: Whether the query/key/value projection has a bias.
        use_rel_pos: Whether attention adds decomposed relative position terms.
        window_size: Side of the attention windows (0: all blocks attend globally).
        global_attn_indexes: Indexes of the blocks that attend over the whole grid.
        use_abs_pos: Whether a learned absolute position embedding is added.
        layer_norm_eps: Epsilon of the transformer's layer norms (SAM uses 1e-6).
    """

    def __init__(
        self,
        img_size: int = 1024,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        out_chans: int = 256,
        qkv_bias: bool = True,
        use_rel_pos: bool = True,
        window_size: int = 14,
        global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11),
        *,
        use_abs_pos: bool = True,
        layer_norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.img_size = img_size
        grid = img_size // patch_size
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.pos_embed: nn.Parameter | None = None
        if use_abs_pos:
            self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, embed_dim))
        self.blocks = nn.ModuleList()
        for index in range(depth):
            block_window = 0 if index in global_attn_indexes else window_size
            self.blocks.append(
                Block(
                    dim=embed_dim,
                    num_heads=num_heads,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    use_rel_pos=use_rel_pos,
                    window_size=block_window,
                    input_size=(grid, grid),
                    layer_norm_eps=layer_norm_eps,
                )
            )
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dim, out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def prepare_for_inference(self) -> ImageEncoderViT:
        """Switch to evaluation mode (nothing to fold in this encoder).

        Returns:
            This encoder.
        """
        return self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode images.

        Args:
            x: Normalised images, Bx3xHxW with H = W = ``img_size``.

        Returns:
            Image embeddings, Bx(out_chans)x(H/patch)x(W/patch).
        """
        x = self.patch_embed(x)
        if self.pos_embed is not None:
            pos = self.pos_embed
            if pos.shape[1:3] != x.shape[1:3]:
                pos = F.interpolate(
                    pos.permute(0, 3, 1, 2), size=x.shape[1:3], mode="bicubic", align_corners=False
                ).permute(0, 2, 3, 1)
            x = x + pos
        for block in self.blocks:
            x = block(x)
        x = self.neck(x.permute(0, 3, 1, 2))
        return x.contiguous()


class PatchEmbed(nn.Module):
    """Non-overlapping patch projection: BxCxHxW image to BxhxwxD tokens.

    Args:
        patch_size: Side of one patch (kernel size and stride).
        in_chans: Input channels.
        embed_dim: Output token width D.
    """

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Project patches.

        Args:
            x: Images, BxCxHxW.

        Returns:
            Tokens, B x H/patch x W/patch x D, contiguous.
        """
        return self.proj(x).permute(0, 2, 3, 1).contiguous()


class Block(nn.Module):
    """Pre-norm transformer block with optional window attention.

    Args:
        dim: Token width.
        num_heads: Attention heads.
        mlp_ratio: MLP hidden width as a multiple of ``dim``.
        qkv_bias: Whether the query/key/value projection has a bias.
        use_rel_pos: Whether attention adds decomposed relative position terms.
        window_size: Window side, or 0 for global attention.
        input_size: Token grid (h, w) of a global block, used to size the relative
            position tables.
        layer_norm_eps: Epsilon of the two layer norms.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        use_rel_pos: bool = True,
        window_size: int = 0,
        input_size: tuple[int, int] = (64, 64),
        layer_norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.window_size = window_size
        self.norm1 = nn.LayerNorm(dim, eps=layer_norm_eps)
        self.attn = Attention(
            dim,
            num_heads=num_heads,
            qkv_bias=qkv_bias,
            use_rel_pos=use_rel_pos,
            input_size=input_size if window_size == 0 else (window_size, window_size),
        )
        self.norm2 = nn.LayerNorm(dim, eps=layer_norm_eps)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio), act=nn.GELU)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply attention and MLP with residual connections.

        Args:
            x: Tokens, BxHxWxC.

        Returns:
            Tokens, BxHxWxC.
        """
        y = self.attn(self.norm1(x), self.window_size)
        x = y.add_(x) if can_work_in_place(y) else y + x
        y = self.mlp(self.norm2(x))
        return x.add_(y) if can_work_in_place(x) else x + y


class Attention(nn.Module):
    """Multi-head self-attention with decomposed relative position terms (MViTv2 style).

    The attention logit between query position (i_h, i_w) and key position (j_h, j_w) is
    ``q.k * scale + q.R_h[i_h - j_h] + q.R_w[i_w - j_w]`` with learned tables R_h, R_w.

    Args:
        dim: Token width.
        num_heads: Attention heads.
        qkv_bias: Whether the query/key/value projection has a bias.
        use_rel_pos: Whether to add the relative position terms.
        input_size: Token grid (h, w) the relative position tables are sized for.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = True,
        use_rel_pos: bool = True,
        input_size: tuple[int, int] = (14, 14),
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.use_rel_pos = use_rel_pos
        if use_rel_pos:
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size[0] - 1, self.head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size[1] - 1, self.head_dim))

    def forward(self, x: torch.Tensor, window_size: int = 0) -> torch.Tensor:
        """Attend within windows (``window_size`` > 0) or over the whole grid.

        Padding positions of partial windows take part in attention as zero tokens, like
        in SAM; their projections are the projection bias, so the projection runs on the
        real tokens only.

        Args:
            x: Normalised tokens, BxHxWxC.
            window_size: Window side, or 0 for global attention.

        Returns:
            Tokens, BxHxWxC.
        """
        batch, height, width, channels = x.shape
        # Three separate projections: three moderate buffers instead of one large one.
        weights = self.qkv.weight.chunk(3)
        biases = self.qkv.bias.chunk(3) if self.qkv.bias is not None else (None, None, None)
        q, k, v = (F.linear(x, w, b) for w, b in zip(weights, biases, strict=True))
        if window_size > 0:
            grid = (window_size, window_size)
            (q, padded_hw), (k, _), (v, _) = (
                window_partition(t, window_size, b) for t, b in zip((q, k, v), biases, strict=True)
            )
        else:
            grid = (height, width)
            q, k, v = (t.view(batch, height * width, channels) for t in (q, k, v))
        out = self._attend(q, k, v, grid)
        if window_size > 0:
            out = window_unpartition(out, window_size, padded_hw, (height, width))
        else:
            out = out.view(batch, height, width, channels)
        return self.proj(out)

    def _attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, grid: tuple[int, int]
    ) -> torch.Tensor:
        """Multi-head attention over the tokens of each batch entry.

        Args:
            q: Projected queries, BxNxC with N = grid[0] * grid[1].
            k: Projected keys, BxNxC.
            v: Projected values, BxNxC.
            grid: Token grid (h, w) of each batch entry.

        Returns:
            Attention output before the output projection, BxNxC.
        """
        batch, tokens, channels = q.shape
        q, k, v = (t.view(batch, tokens, self.num_heads, self.head_dim) for t in (q, k, v))
        rel = None
        if self.use_rel_pos:
            rel = decomposed_rel_pos(q, self.rel_pos_h, self.rel_pos_w, grid)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        if rel is not None:
            out = attention_with_rel_pos(q, k, v, *rel, self.scale)
        else:
            out = attention(q, k, v, scale=self.scale).transpose(1, 2)
        return out.reshape(batch, tokens, channels)


def resize_rel_pos(rel_pos: torch.Tensor, size: int) -> torch.Tensor:
    """Relative position table for ``size`` positions, linearly resampled if needed.

    Args:
        rel_pos: Learned table, Lxc, for offsets -(L-1)/2 .. (L-1)/2.
        size: Number of positions along the axis (queries and keys alike).

    Returns:
        (2*size-1)xc table; row ``d + size - 1`` is the embedding of offset d.
    """
    length = 2 * size - 1
    if rel_pos.shape[0] == length:
        return rel_pos
    resized = F.interpolate(rel_pos.t().unsqueeze(0), size=length, mode="linear")
    return resized.squeeze(0).t()


def decomposed_rel_pos(
    q: torch.Tensor, rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor, grid: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-query relative position terms along each axis.

    The term of query (i, j) for key row k is ``q . R_h[i - k]``. It is read from the
    products of q with every row of the (reversed) table through a strided view that
    shifts each query row by its own index, so no per-pair table of R is gathered.

    Args:
        q: Queries (unscaled), token-major: BxNxheadsxc with N = h * w.
        rel_pos_h: Learned table for the height axis.
        rel_pos_w: Learned table for the width axis.
        grid: Token grid (h, w).

    Returns:
        ``rel_h`` Bxheadsxhxwxh (term for each key row) and ``rel_w`` Bxheadsxhxwxw (term for
        each key column), in float32 even under reduced-precision autocast.
    """
    height, width = grid
    batch, _, heads, channels = q.shape
    grid_q = q.reshape(batch, height, width, heads, channels)
    if tracing():  # exporters follow gathers, not the strided view below
        return _gathered_rel_pos(grid_q, rel_pos_h, 0), _gathered_rel_pos(grid_q, rel_pos_w, 1)

    def shifted(table: torch.Tensor, size: int, axis: int) -> torch.Tensor:
        # products[b, i, j, n, m] = q[b, i, j, n] . table[2 * size - 2 - m]; the term for
        # key k of query position p (p = i or j, per axis) sits at m = size - 1 - p + k.
        reversed_table = resize_rel_pos(table, size).flip(0).float()
        with torch.autocast(q.device.type, enabled=False):
            products = torch.matmul(grid_q.float(), reversed_table.t()).contiguous()
        s_b, s_i, s_j, s_n, _ = products.stride()
        strides = [s_b, s_n, s_i, s_j, 1]
        strides[2 + axis] -= 1
        view = products.as_strided(
            (batch, heads, height, width, size), strides, products.storage_offset() + size - 1
        )
        return view.contiguous()  # broadcasting from the skewed view would be slow

    return shifted(rel_pos_h, height, 0), shifted(rel_pos_w, width, 1)


def _gathered_rel_pos(grid_q: torch.Tensor, table: torch.Tensor, axis: int) -> torch.Tensor:
    """:func:`decomposed_rel_pos`'s term along one axis, from a gathered per-pair table.

    Args:
        grid_q: Queries, Bxhxwxheadsxc.
        table: Learned table for the axis.
        axis: 0 for the height axis, 1 for the width axis.

    Returns:
        Bxheadsxhxwxsize, size = h or w: the term of query position p and key k is
        ``q . table[p - k + size - 1]``.
    """
    size = grid_q.shape[1 + axis]
    positions = torch.arange(size, device=grid_q.device)
    pairs = resize_rel_pos(table, size)[positions[:, None] - positions[None, :] + size - 1]
    pattern = "bijnc,ikc->bnijk" if axis == 0 else "bijnc,jkc->bnijk"
    return torch.einsum(pattern, grid_q.float(), pairs.float())


def attention_with_rel_pos(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rel_h: torch.Tensor,
    rel_w: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """Softmax attention whose logits get decomposed relative position terms.

    The terms are expanded into an additive mask for a fused attention kernel, a few query
    rows, heads or batch entries at a time, so the full heads x N x N mask of a global
    block never exists (it would take more time to allocate than to compute).

    Args:
        q: Queries, BxheadsxNxc, N = h * w.
        k: Keys, BxheadsxNxc.
        v: Values, BxheadsxNxc.
        rel_h: Height terms from :func:`decomposed_rel_pos`, Bxheadsxhxwxh.
        rel_w: Width terms from :func:`decomposed_rel_pos`, Bxheadsxhxwxw.
        scale: Logit scale applied to q.k.

    Returns:
        Attention output, BxNxheadsxc (token-major, ready to merge the heads).
    """
    batch, heads, _, channels = q.shape
    _, _, height, width, key_rows = rel_h.shape
    key_cols = rel_w.shape[-1]
    if tracing():  # one mask for all queries, no loops that fix the batch size
        mask = (rel_h[..., :, None] + rel_w[..., None, :]).reshape(
            batch, heads, height * width, key_rows * key_cols
        )
        return attention(q, k, v, mask.to(q.dtype), scale).transpose(1, 2)
    per_row = width * key_rows * key_cols
    rows = min(max(1, MASK_CHUNK_ELEMENTS // per_row), height)
    head_step = min(max(1, MASK_CHUNK_ELEMENTS // (per_row * height)), heads)
    head_step = head_step if rows == height else 1
    batch_step = min(max(1, MASK_CHUNK_ELEMENTS // (per_row * height * heads)), batch)
    batch_step = batch_step if head_step == heads else 1
    out = q.new_empty((batch, height * width, heads, channels))
    out_heads = out.transpose(1, 2)
    mask_buffer = rel_h.new_empty((batch_step, head_step, rows, width, key_rows, key_cols))
    for b0 in range(0, batch, batch_step):
        b = slice(b0, b0 + batch_step)
        for h0 in range(0, heads, head_step):
            h = slice(h0, h0 + head_step)
            for r0 in range(0, height, rows):
                r = slice(r0, r0 + rows)
                t = slice(r0 * width, (r0 + rows) * width)
                rh, rw = rel_h[b, h, r, :, :, None], rel_w[b, h, r, :, None, :]
                if torch.is_grad_enabled():
                    mask = rh + rw
                else:  # reuse one buffer
                    mask = mask_buffer[: rh.shape[0], : rh.shape[1], : rh.shape[2]]
                    torch.add(rh, rw, out=mask)
                out_heads[b, h, t] = F.scaled_dot_product_attention(
                    q[b, h, t],
                    k[b, h],
                    v[b, h],
                    attn_mask=mask.reshape(*mask.shape[:2], -1, key_rows * key_cols).to(q.dtype),
                    scale=scale,
                )
    return out
