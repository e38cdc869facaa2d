"""The model-family table: for each family its downloadable and bundled weights (and files used as
they are, e.g. RoBERTa's tokenizer files ``gpt2_bpe``), the ``infer.py`` stage it serves and that
stage's default checkpoint.  Its models are the rows of :mod:`peanut_jax.models`' table (builder +
converter) whose names start with the family name:
``family("e2fgvi_hq") == "e2fgvi"``.  A new model variant is one row there; new weights or a new
family one :class:`Family` here."""

from __future__ import annotations

import dataclasses

from peanut_jax.checkpoints.entry import WeightEntry


def family(name: str) -> str:
    """Model family of a model name: ``e2fgvi`` / ``e2fgvi_hq`` -> ``e2fgvi``, ``rife_hdv3`` -> ``rife``."""
    return str(name).split("_")[0]


def check_family(got: str, name: str, where) -> None:
    """The one family check of every checkpoint kind: weights of model ``got`` found at ``where``
    must be of the family of ``name``."""
    if family(got) != family(name):
        raise ValueError(f"{where}: holds weights of model {got!r}, not {name!r}")


@dataclasses.dataclass(frozen=True)
class Family:
    """``model``: what a stage loads as (and builds when a checkpoint does not say which model);
    ``detect``: official files of this family are recognised (variant, wrong family refused)."""

    name: str
    model: str
    weights: tuple[WeightEntry, ...] = ()
    stage: str | None = None
    default: str | None = None
    demo: str | None = None
    detect: bool = False

    @property
    def models(self) -> list[str]:
        """The family's rows of the model table."""
        from peanut_jax.models import names

        return [m for m in names() if family(m) == self.name]


_MMAGIC = "https://download.openmmlab.com/mmediting/restorers/"
_MMAGIC_LICENSE = "Apache-2.0 (OpenMMLab mmagic/mmediting model zoo)"
_SPYNET_NC = "SPyNet models: free for non-commercial scientific research (anuragranj/spynet licence terms)"


def _stage_family(name: str, model: str, stage: str, default: str, weights: tuple) -> Family:
    """A family serving an ``infer.py`` stage: its bundled demo weights are ``<stage>_demo`` and its
    official files are recognised."""
    return Family(name, model, weights, stage=stage, default=default, demo=f"{stage}_demo", detect=True)


def _demo(stage: str, model: str, what: str) -> WeightEntry:
    """Small models of the official architectures trained with train.py on the synthetic videos
    (scripts/train_demo_weights.sh), shipped with the package: offline runs and the demo."""
    return WeightEntry(
        f"{stage}_demo",
        model,
        "params.safetensors",
        bundled=f"{stage}_demo",
        license="same as peanut_jax",
        source="peanut_jax/assets (trained with train.py: scripts/train_demo_weights.sh)",
        notes=f"bundled demo weights: tiny {what} trained on synthetic videos (offline; not the official quality)",
    )


_SPYNET_WEIGHTS = (
    WeightEntry(
        "spynet",
        "spynet",
        "spynet_20210409-c6c1bd09.pth",
        urls=(_MMAGIC + "basicvsr/spynet_20210409-c6c1bd09.pth",),
        sha256_prefix="c6c1bd09",
        license=_MMAGIC_LICENSE,
        source="mmagic configs/basicvsr_pp/README.md; E2FGVI model/modules/flow_comp.py",
        notes="mmagic SPyNet used (and fine-tuned) by BasicVSR++ and E2FGVI",
    ),
    *[
        WeightEntry(
            f"spynet_sniklaus_{v.replace('-', '_')}",
            "spynet_sniklaus",
            f"network-{v}.pytorch",
            urls=(f"http://content.sniklaus.com/github/pytorch-spynet/network-{v}.pytorch",),
            license=_SPYNET_NC,
            source="sniklaus/pytorch-spynet run.py",
            notes=f"sniklaus pytorch-spynet '{v}' (converted from the Torch7 originals)",
        )
        for v in ("sintel-final", "sintel-clean", "chairs-final", "chairs-clean", "kitti-final")
    ],
    _demo("spynet", "spynet", "SPyNet"),
)
_SPYNET = Family("spynet", "spynet", demo="spynet_demo", detect=True, weights=_SPYNET_WEIGHTS)

_E2FGVI_WEIGHTS = (
    *[
        WeightEntry(
            name,
            name,
            f"{stem}-CVPR22.pth",
            manual=True,
            pages=pages,
            license="CC BY-NC 4.0 (non-commercial use only)",
            source="MCG-NKU/E2FGVI README.md",
            notes=f"{what}; Google Drive / Baidu only",
        )
        for name, stem, what, pages in (
            (
                "e2fgvi",
                "E2FGVI",
                "E2FGVI generator (432x240 input)",
                (
                    "https://drive.google.com/file/d/1tNJMTJ2gmWdIXJoHVi5-H504uImUiJW9/view?usp=sharing",
                    "https://pan.baidu.com/s/1qXAErbilY_n_Fh9KB8UF7w?pwd=lsjw",
                ),
            ),
            (
                "e2fgvi_hq",
                "E2FGVI-HQ",
                "E2FGVI-HQ generator (arbitrary resolution)",
                (
                    "https://drive.google.com/file/d/10wGdKSUOie0XmCr8SQ2A2FeDe-mfn5w3/view?usp=sharing",
                    "https://pan.baidu.com/s/1jfm1oFU1eIy-IRfuHP8YXw?pwd=ssb3",
                ),
            ),
        )
    ],
    _demo("erase", "e2fgvi_hq", "E2FGVI-HQ"),
)
_E2FGVI = _stage_family("e2fgvi", "e2fgvi", "erase", "e2fgvi_hq", _E2FGVI_WEIGHTS)

_BASICVSR_WEIGHTS = (
    *[
        WeightEntry(
            f"basicvsr_pp_{key}",
            "basicvsr_pp",
            f"basicvsr_plusplus_{stem}-{h}.pth",
            urls=(f"{_MMAGIC}basicvsr_plusplus/basicvsr_plusplus_{stem}-{h}.pth",),
            sha256_prefix=h,
            license=_MMAGIC_LICENSE,
            source="mmagic configs/basicvsr_pp/README.md",
            notes=notes,
        )
        for key, stem, h, notes in (
            ("reds4", "c64n7_8x1_600k_reds4_20210217", "db622b2f", "BasicVSR++ x4 VSR, REDS (BI)"),
            ("vimeo90k_bi", "c64n7_8x1_300k_vimeo90k_bi_20210305", "4ef437e2", "BasicVSR++ x4 VSR, Vimeo-90K (BI)"),
            ("vimeo90k_bd", "c64n7_8x1_300k_vimeo90k_bd_20210305", "ab315ab1", "BasicVSR++ x4 VSR, Vimeo-90K (BD)"),
            ("ntire_vsr", "c128n25_ntire_vsr_20210311", "1ff35292", "BasicVSR++ c128n25 x4, NTIRE 2021 VSR"),
            (
                "ntire_decompress_track1",
                "c128n25_ntire_decompress_track1_20210223",
                "7b2eba02",
                "BasicVSR++ c128n25 same-size restoration, NTIRE 2021 compressed video track 1",
            ),
            (
                "ntire_decompress_track2",
                "c128n25_ntire_decompress_track2_20210314",
                "eeae05e6",
                "BasicVSR++ c128n25 same-size restoration, NTIRE 2021 compressed video track 2",
            ),
            (
                "ntire_decompress_track3",
                "c128n25_ntire_decompress_track3_20210304",
                "6daf4a40",
                "BasicVSR++ c128n25 same-size restoration, NTIRE 2021 compressed video track 3",
            ),
        )
    ],
    _demo("upscale", "basicvsr_pp", "BasicVSR++ x4"),
)
_BASICVSR = _stage_family("basicvsr", "basicvsr_pp", "upscale", "basicvsr_pp", _BASICVSR_WEIGHTS)

# rife_hdv3 is pinned to the Hugging Face commit that added flownet.pkl (the repository's last
# commit; sha256 and size from that commit's Git LFS pointer).  The ECCV zip still follows the
# moving "main" of huggingface.co/hzwer/RIFE: its commit and sha256 could not be looked up here
# (github:hzwer/RIFE is the code repository, without the weights); pin it as
# resolve/<commit>/RIFE_train_log.zip with sha256= when they are known.
_RIFE_WEIGHTS = (
    WeightEntry(
        "rife",
        "rife",
        "flownet.pkl",
        archive="RIFE_train_log.zip",
        urls=("https://huggingface.co/hzwer/RIFE/resolve/main/RIFE_train_log.zip",),
        pages=("https://drive.google.com/file/d/1h42aGYPNJn2q8j_GVkS_yDu__G_UZ2GX/view?usp=sharing",),
        license="MIT (hzwer/ECCV2022-RIFE)",
        source="ECCV2022-RIFE README.md (Evaluation: 'RIFE model' Google Drive link); Hugging Face hzwer/RIFE",
        notes="ECCV RIFE (IFNet) paper model; the zip from the author's Hugging Face repository is assumed to "
        "match the README's Google Drive file (not checked byte for byte)",
    ),
    WeightEntry(
        "rife_hdv3",
        "rife_hdv3",
        "flownet.pkl",
        urls=("https://huggingface.co/AlexWortega/RIFE/resolve/440cdec905de98e1d7e81f65d2c88a08da7cb4e2/flownet.pkl",),
        sha256="fe854fc8996547c953f732aaa3b78cae76cc0a12833ae856ea0749c4c570d7d8",
        size=12186817,
        pages=("https://drive.google.com/file/d/1APIzVeI-4ZZCEuIRE1m6WYfSCaOsi_7_/view?usp=sharing",),
        license="MIT (hzwer/ECCV2022-RIFE HD models)",
        source="CogVideo inference/gradio_composite_demo/app.py (snapshot_download AlexWortega/RIFE); "
        "ECCV2022-RIFE README.md (HD model link)",
        notes="RIFE IFNet_HDv3 as used by the CogVideoX demo",
    ),
    _demo("interpolate", "rife", "RIFE IFNet"),
)
_RIFE = _stage_family("rife", "rife", "interpolate", "rife_hdv3", _RIFE_WEIGHTS)

_VGG_WEIGHTS = (
    WeightEntry(
        "vgg19",
        "vgg19",
        "vgg19-dcbb9e9d.pth",
        urls=("https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",),
        sha256_prefix="dcbb9e9d",
        license="BSD-3-Clause (torchvision); trained on ImageNet",
        source="torchvision VGG19_Weights.IMAGENET1K_V1",
        notes="VGG19 features for the perceptual loss",
    ),
)
_VGG = Family("vgg19", "vgg19", weights=_VGG_WEIGHTS)

# SAM 2 (07/2024) and SAM 2.1 (09/2024), click/box/mask segmentation; no checksum is published
_SAM2_WEIGHTS = tuple(
    WeightEntry(
        f"{prefix}_hiera_{size}",
        "sam2",
        f"{prefix}_hiera_{size}.pt",
        urls=(f"https://dl.fbaipublicfiles.com/segment_anything_2/{date}/{prefix}_hiera_{size}.pt",),
        license="Apache-2.0 (facebookresearch/sam2)",
        source="facebookresearch/sam2 checkpoints/download_ckpts.sh, README.md",
        notes=f"SAM {version} Hiera-{size.replace('_plus', '+')}",
    )
    for prefix, date, version in (("sam2", "072824", "2"), ("sam2.1", "092824", "2.1"))
    for size in ("tiny", "small", "base_plus", "large")
)
_SAM2 = Family("sam2", "sam2", weights=_SAM2_WEIGHTS)

# fairseq RoBERTa-base (the text encoder SAMWISE keeps frozen) and the GPT-2 BPE files its
# tokenizer reads (peanut_jax.text.RobertaTokenizer.from_fairseq); no checksum is published
_FAIRSEQ = "https://dl.fbaipublicfiles.com/fairseq/"
_FAIRSEQ_LICENSE = "MIT (facebookresearch/fairseq)"
_ROBERTA_WEIGHTS = (
    WeightEntry(
        "roberta_base",
        "roberta_base",
        "model.pt",
        archive="roberta.base.tar.gz",
        urls=(_FAIRSEQ + "models/roberta.base.tar.gz",),
        license=_FAIRSEQ_LICENSE,
        source="facebookresearch/fairseq examples/roberta/README.md",
        notes="RoBERTa-base encoder (roberta.base/model.pt in the tar.gz, with dict.txt and NOTE)",
    ),
    WeightEntry(
        "gpt2_bpe",
        "roberta_base",
        "encoder.json",
        files=("vocab.bpe", "dict.txt"),
        convert=False,
        urls=(_FAIRSEQ + "gpt2_bpe/encoder.json",),
        license=_FAIRSEQ_LICENSE,
        source="facebookresearch/fairseq examples/roberta/README.pretraining.md (BPE and dictionary files)",
        notes="RoBERTa tokenizer files: GPT-2 byte-level BPE (encoder.json, vocab.bpe) and the fairseq "
        "dictionary (dict.txt); the default of --tokenizer",
    ),
)
_ROBERTA = Family("roberta", "roberta_base", weights=_ROBERTA_WEIGHTS)

# SAMWISE (CVPR 2025): Google Drive only -> python -m peanut_jax.weights import NAME FILE
_SAMWISE_WEIGHTS = tuple(
    WeightEntry(
        f"samwise_{name}",
        "samwise",
        f"samwise_{name}.pth",
        manual=True,
        pages=(f"https://drive.google.com/file/d/{drive}/view",),
        license="Apache-2.0 (ClaudiaCuttano/SAMWISE)",
        source="ClaudiaCuttano/SAMWISE README.md",
        notes=f"SAMWISE trained on {what} (SAM 2.1 base+ and RoBERTa-base frozen; HSA + CME)",
    )
    for name, drive, what in (
        ("mevis", "1Molt2up2bP41ekeczXWQU-LWTskKJOV2", "MeViS"),
        ("ytvos", "17Ei9XU678tCiiV14c-9EB9ZqXVrj4qEw", "Ref-YouTube-VOS (also its Ref-DAVIS17 model)"),
        ("refcoco", "1gRGzARDjIisZ3PnCW77Y9TMM_SbV8aaa", "RefCOCO/+/g (image pretraining)"),
    )
)
_SAMWISE = Family(
    "samwise",
    "samwise",
    weights=(*_SAMWISE_WEIGHTS, _demo("mask", "samwise", "SAMWISE (synthetic BPE tokenizer)")),
    demo="mask_demo",
)

#: family name -> :class:`Family`
FAMILIES: dict[str, Family] = {f.name: f for f in (_E2FGVI, _BASICVSR, _RIFE, _SPYNET, _VGG, _SAM2, _ROBERTA, _SAMWISE)}

#: the model each ``infer.py`` stage loads (its family) and the stage's default checkpoint
STAGE_FAMILY = {f.stage: f.model for f in FAMILIES.values() if f.stage}
STAGE_DEFAULT = {f.stage: f.default for f in FAMILIES.values() if f.stage}

#: the bundled demo weights of each model family (what to suggest when official weights are missing)
DEMO_WEIGHTS = {f.name: f.demo for f in FAMILIES.values() if f.demo}


def builtin_weights() -> list[WeightEntry]:
    """Every registry entry of every family."""
    return [e for f in FAMILIES.values() for e in f.weights]
