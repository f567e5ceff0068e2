"""What the IISAN paper reports, one table for every reader: its trainable parameters per method
(``iisan-bench params``) and its time and memory as shares of full fine-tuning (the report, next to
our own ratios). Its training recipe is not here: each method states that beside its code
(``Method.paper_train`` / ``paper_options``, applied by ``launch.recipe.method_config``).

Source: Fu et al., "IISAN: Efficiently Adapting Multimodal Representation for Sequential
Recommendation with Decoupled PEFT", SIGIR 2024, arXiv 2404.02059; Amazon Scientific, one GPU.
Paper figures: FFT 443 s/epoch and 46.8 GB peak memory; IISAN 179 s, 8.3 GB; IISAN with cached
hidden states 22 s, 3.1 GB. The percentages below are the ratios as the paper states them.

Why only ratios: the paper's absolute seconds and GB belong to its data scale, backbone and GPU,
while a share of FFT on the same setup is the claim a benchmark run can check.
"""

from __future__ import annotations

from dataclasses import dataclass

PAPER_REFERENCE = "fft"  # the paper's ratios are to full fine-tuning, our method "fft"
PAPER_SOURCE = ("the IISAN paper (SIGIR 2024, arXiv 2404.02059: Amazon Scientific on one GPU; "
                "FFT 443 s/epoch and 46.8 GB, IISAN 179 s and 8.3 GB, cached IISAN 22 s and 3.1 GB)")


@dataclass(frozen=True)
class PaperRatio:
    """A percentage of FFT with the precision the paper prints it at (40% is not 40.0%)."""

    pct: float
    decimals: int

    @property
    def text(self) -> str:
        return f"{self.pct:.{self.decimals}f}%"


@dataclass(frozen=True)
class PaperFigures:
    """One method's training time per epoch and peak memory as a share of FFT."""

    time: PaperRatio
    memory: PaperRatio


# Trainable parameters the paper reports (Table 2 / its code) for BERT-base + ViT-base, by our method names
PAPER_TRAINABLE: dict[str, float] = {"fft": 194.9e6, "adapter": 4.97e6, "lora": 0.83e6, "bitfit": 0.41e6,
                                     "iisan": 4.11e6, "iisan-cached": 4.11e6}

# keyed by our method names
PAPER: dict[str, PaperFigures] = {
    "iisan": PaperFigures(time=PaperRatio(40.0, 0), memory=PaperRatio(17.8, 1)),
    "iisan-cached": PaperFigures(time=PaperRatio(5.0, 1), memory=PaperRatio(6.7, 1)),
}


def paper_figures(method: str) -> PaperFigures | None:
    """The paper's figures for one of our methods, None when the paper has none."""
    return PAPER.get(method)
