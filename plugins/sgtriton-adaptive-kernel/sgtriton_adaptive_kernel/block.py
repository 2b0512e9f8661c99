"""``adaptive-kernel``: the block type sgtriton finds through this package's entry point.

    [project.entry-points."sgtriton.blocks"]
    adaptive-kernel = "sgtriton_adaptive_kernel.block:AdaptiveKernelBlock"

Style layers are :class:`~sgtriton_adaptive_kernel.layer.AdaptiveKernelLayer` (GigaGAN's
sample-adaptive kernel selection on StyleGAN2's modulated conv); ToRGB is StyleGAN2's modulated
ToRGB, reused from sgtriton (``sgtriton.blocks.layers.ModulatedToRGB``), exactly as ``moddemod``
builds it. Option ``bank_size`` (default 4) is the number of kernels per layer.
"""

from __future__ import annotations

from typing import Any

from sgtriton.blocks.base import BlockType, default_macs
from sgtriton.blocks.layers import ModulatedToRGB
from sgtriton.blocks.moddemod import ModDemodBlock
from sgtriton.blocks.nodes import LayerNode
from torch import nn

from sgtriton_adaptive_kernel.kernel import kernel_spec
from sgtriton_adaptive_kernel.layer import AdaptiveKernelLayer


class AdaptiveKernelBlock(BlockType):
    """GigaGAN sample-adaptive kernel selection (Kang et al., CVPR 2023) on StyleGAN2 mod/demod."""

    name = "adaptive-kernel"
    description = ("GigaGAN sample-adaptive kernel selection: softmax(A(w))-weighted bank of kernels, "
                   "then StyleGAN2 mod/demod conv, noise, bias, lrelu*sqrt2, clamp")
    implementations = ("reference", "triton")
    options = {"bank_size": 4}
    test_options = {"bank_size": (1, 2, 3, 5)}  # 5: the looped-bank kernel

    def validate_options(self, block_kwargs: dict[str, Any]) -> None:
        bank_size = block_kwargs["bank_size"]
        if isinstance(bank_size, bool) or not isinstance(bank_size, int) or bank_size < 1:
            raise ValueError(f"bank_size={bank_size!r}: expected an int >= 1 (kernels in each layer's bank)")

    @property
    def bank_size(self) -> int:
        return self.block_kwargs["bank_size"]

    def make_layer(self, node: LayerNode) -> nn.Module:
        if node.kind != "conv":
            raise ValueError(f"{node.name}: block {self.name!r} builds style layers of kind 'conv', "
                             f"got kind {node.kind!r}")
        return AdaptiveKernelLayer(node, self.bank_size, node.options["resample_filter"])

    def make_torgb(self, node: LayerNode) -> nn.Module:
        return ModulatedToRGB(node.in_channels, node.out_channels, node.w_dim, node.conv_clamp,
                              node.options["resample_filter"])

    def kernels(self, node: LayerNode, impl: str) -> tuple[str, ...]:
        if node.kind == "torgb":  # moddemod's ToRGB module, so whatever moddemod runs for it
            return ModDemodBlock().kernels(node, impl)
        if impl == "triton":
            return ("fully_connected:affine", "fully_connected:selector", "selection_gram:einsum", "modconv2d_prologue",
                    kernel_spec(node.up, self.bank_size).name)
        return ("affine:addmm", "selector:addmm", "adaptive_modulated_conv2d_ref", "bias_act_ref")

    def macs(self, node: LayerNode) -> int:
        """``moddemod``'s MACs plus the selector (``w_dim * B``) and mixing the bank once per sample
        (``B * O * I * k^2``; ``up = 2`` mixes the four phase weights, ``4x``)."""
        macs = default_macs(node)
        if node.kind == "conv":
            macs += node.w_dim * self.bank_size
            macs += self.bank_size * node.out_channels * node.in_channels * node.kernel_size**2 * node.up**2
        return macs
