"""Where a scenario's base model lives on disk, and whether its files may be loaded.

Weights are read from safetensors files only: a `pytorch_model.bin` or `*.pt` file is a pickle, and
unpickling a file runs whatever code it names, so a model folder that has no safetensors weights is refused
before anything loads it (with `use_safetensors=True`, transformers would refuse it too, less plainly).
"""

from __future__ import annotations

from pathlib import Path

BUILTIN = "builtin"
BUILTIN_DIR = Path(__file__).parent / "base_model"
PICKLED_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.pkl", "*.ckpt")
# What AutoTokenizer reads a tokenizer from: a fast tokenizer's file, SentencePiece, or BPE / WordPiece vocabularies.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "spiece.model", "vocab.json", "vocab.txt")


def resolve_model_path(path: str) -> str:
    return str(BUILTIN_DIR) if path == BUILTIN else path


def looks_local(path: str) -> bool:
    """A folder on this machine rather than a hub id."""
    return path.startswith((".", "/", "~")) or Path(path).exists()


def config_file(path: str) -> Path | None:
    """The model's config.json: in its folder, or for a hub id in this machine's Hugging Face cache (a run
    never downloads); None where there is none."""
    if path == BUILTIN or looks_local(path):
        file = Path(resolve_model_path(path)).expanduser() / "config.json"
        return file if file.is_file() else None
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(path, "config.json")
    except ValueError:  # not a valid hub id either
        return None
    return Path(cached) if isinstance(cached, str) else None


def model_config(file: str | Path):
    """The transformers config of a model's config.json, which maps each family's own keys onto common names
    (GPT-2's n_embd is hidden_size). Code shipped with a model (trust_remote_code) is never run."""
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(Path(file).parent, trust_remote_code=False)


def model_folder_problem(path: str) -> str | None:
    """Why the local model folder `path` cannot be loaded (None: it can): it must hold config.json,
    safetensors weights, every one readable, and a tokenizer."""
    folder = Path(resolve_model_path(path)).expanduser()
    if not folder.is_dir():
        return f"{path} is not a folder"
    if not (folder / "config.json").is_file():
        return f"{path} is not a Hugging Face model folder (no config.json)"
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        pickled = sorted(p.name for pattern in PICKLED_WEIGHTS for p in folder.glob(pattern))
        if pickled:
            return (f"{path} holds only pickled weights ({', '.join(pickled)}), which fedfleet never loads: "
                    "convert them to safetensors (model.save_pretrained(folder, safe_serialization=True))")
        return f"{path} has no weights (*.safetensors)"
    for file in [folder / "config.json", *weights]:
        problem = unreadable(file)
        if problem:
            return problem
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        return (f"{path} has no tokenizer (one of {', '.join(TOKENIZER_FILES)}): save it beside the model "
                "(tokenizer.save_pretrained(folder))")
    return None


def unreadable(path: Path) -> str | None:
    """Why `path` cannot be read as a file (None: it can)."""
    if not path.exists():
        return f"no such file: {path}"
    if not path.is_file():
        return f"{path} is not a file"
    try:
        with path.open("rb") as f:
            f.read(1)
    except OSError as err:
        return f"cannot read {path}: {err.strerror or err}"
    return None
