"""What every checkpoint family's reader shares (convert.py, dream_checkpoint.py): the error that names a file, field
or tensor; the JSON files of a Hugging Face folder; special-token lookup; the chat template; and `CheckpointFolder`,
what a family's reader hands the one writing path of convert.py."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from typing import Callable

from .model import ModelConfig


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be converted; the message names the file, field or tensor."""


def read_json(folder: str, name: str, required: bool = True) -> dict | None:
    path = os.path.join(folder, name)
    if not os.path.exists(path):
        if required:
            raise CheckpointError(f"{path}: missing")
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def token_id(tokenizer: dict, content: str | dict | None) -> int | None:
    """Id of a special token given by its text (tokenizer_config.json style), or None."""
    if isinstance(content, dict):
        content = content.get("content")
    if content is None:
        return None
    for added in tokenizer.get("added_tokens", []):
        if added["content"] == content:
            return added["id"]
    return tokenizer.get("model", {}).get("vocab", {}).get(content)


def chat_template(folder: str, tok_config: dict) -> tuple[str | None, str]:
    """The chat template and where it came from. transformers >= 4.47 saves it as chat_template.jinja (and no
    longer in tokenizer_config.json), and reads that file first when both exist; so do we. tokenizer_config.json
    may hold a string or a list of named templates ({"name", "template"}), of which "default" is the one used."""
    path = os.path.join(folder, "chat_template.jinja")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            return f.read(), "chat_template.jinja"
    template = tok_config.get("chat_template")
    if isinstance(template, list):
        named = {t.get("name"): t.get("template") for t in template}
        if "default" not in named:
            raise CheckpointError(f"{folder}/tokenizer_config.json: chat_template lists {sorted(named)}, no 'default'")
        return named["default"], "tokenizer_config.json (default of a list)"
    if template is None:
        return None, "none (chat requests will be refused)"
    return template, "tokenizer_config.json"


@dataclass
class CheckpointFolder:
    """A checkpoint folder as a family's reader understood it: everything convert.py writes, and the report's lines.

    `to_ours` maps a checkpoint tensor name to our parameter name (None: not one of ours, reported as unexpected);
    `label` names one of our parameters in messages (with the checkpoint's own name where the two differ)."""

    family: str  # "LLaDA", "Dream": named in the report and in refusals
    architecture: str  # the report's name of the architecture, e.g. "LLaDA (LLaDALlamaBlock)"
    config: ModelConfig
    to_ours: Callable[[str], str | None]
    label: Callable[[str], str]
    tokenizer: dict  # tokenizer.json's contents
    tokenizer_file: str | None  # a tokenizer.json to copy byte for byte; None: `tokenizer` is written out
    mask_token_id: int
    eos_token_ids: tuple[int, ...]
    pad_token_id: int
    bos_token_id: int | None
    chat_template: str | None
    chat_template_source: str
    vocabulary: str  # the report's vocabulary line
    generation_defaults: dict | None = None  # None: dllm_json's defaults
    report: list[tuple[str, str]] = field(default_factory=list)  # (heading, text): the family's own lines of the report

    def write_tokenizer(self, path: str) -> None:
        if self.tokenizer_file is not None:
            shutil.copyfile(self.tokenizer_file, path)
            return
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.tokenizer, f, ensure_ascii=False, indent=None, separators=(",", ":"))
