"""`LocalHFTeacher`: a local Hugging Face causal LM with a chat template, sampled in seeded batches."""

from __future__ import annotations

import logging
from pathlib import Path

from .protocol import ProgressFn, Teacher, TeacherRequest, TeacherResponse, _Progress

log = logging.getLogger(__name__)


class LocalHFTeacher(Teacher):
    """Any local HF causal-LM folder with a chat template, sampled in left-padded batches (seeded)."""

    backend = "hf-local"

    def __init__(
        self,
        model_path: str | Path,
        max_new_tokens: int = 200,
        temperature: float = 0.8,
        top_k: int = 200,
        batch_size: int = 8,
        seed: int = 0,
        device: str = "auto",
        progress_every_s: float = 5.0,
    ):
        self.model_path = Path(model_path)
        self.model = self.model_path.name
        self.max_new_tokens = int(max_new_tokens)
        self.temperature = float(temperature)
        self.top_k = int(top_k)
        self.batch_size = max(1, int(batch_size))
        self.seed = int(seed)
        self.device = device
        self.progress_every_s = float(progress_every_s)
        self._tokenizer = None
        self._lm = None

    def __repr__(self) -> str:
        return (
            f"LocalHFTeacher(model_path={str(self.model_path)!r}, max_new_tokens={self.max_new_tokens}, "
            f"temperature={self.temperature}, top_k={self.top_k}, batch_size={self.batch_size}, seed={self.seed})"
        )

    def describe(self) -> dict:
        return {
            "backend": self.backend,
            "model": self.model,
            "model_path": str(self.model_path),
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "top_k": self.top_k,
            "batch_size": self.batch_size,
            "seed": self.seed,
        }

    def _load(self):
        if self._lm is None:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            if not (self.model_path / "config.json").exists():
                raise FileNotFoundError(f"{self.model_path} is not a Hugging Face model folder (no config.json)")
            device = torch.device(
                ("cuda" if torch.cuda.is_available() else "cpu") if self.device == "auto" else self.device
            )
            dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
            tokenizer = AutoTokenizer.from_pretrained(self.model_path)
            if not getattr(tokenizer, "chat_template", None):
                raise ValueError(f"{self.model_path} has no chat template; the teacher needs an instruct model")
            tokenizer.padding_side = "left"
            if tokenizer.pad_token_id is None:
                tokenizer.pad_token = tokenizer.eos_token
            lm = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=dtype).to(device)
            lm.eval()
            self._tokenizer, self._lm, self._device = tokenizer, lm, device
        return self._tokenizer, self._lm

    def complete(self, requests: list[TeacherRequest], progress: ProgressFn | None = None) -> list[TeacherResponse]:
        import torch

        requests = list(requests)
        tracker = _Progress(progress, f"teacher {self.backend}:{self.model}", len(requests), self.progress_every_s)
        results: list[TeacherResponse | None] = [None] * len(requests)
        if requests:
            tokenizer, lm = self._load()
            prompts = [
                tokenizer.apply_chat_template(r.messages, add_generation_prompt=True, tokenize=False) for r in requests
            ]
            lengths = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
            order = sorted(range(len(requests)), key=lambda i: (lengths[i], i))  # similar lengths share a batch
            eos_ids = lm.generation_config.eos_token_id
            eos_ids = set(eos_ids if isinstance(eos_ids, list) else [eos_ids] if eos_ids is not None else [])
            eos_ids.add(tokenizer.eos_token_id)
            with torch.random.fork_rng(devices=[self._device] if self._device.type == "cuda" else []):
                torch.manual_seed(self.seed)
                for start in range(0, len(order), self.batch_size):
                    idx = order[start : start + self.batch_size]
                    answers = self._generate(
                        tokenizer, lm, [prompts[i] for i in idx], [requests[i] for i in idx], eos_ids
                    )
                    for i, response in zip(idx, answers):
                        results[i] = response
                        tracker.add(response)
        tracker.emit()
        return [r for r in results if r is not None]

    def _generate(
        self, tokenizer, lm, prompts: list[str], requests: list[TeacherRequest], eos_ids: set
    ) -> list[TeacherResponse]:
        import torch

        try:
            batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self._device)
            sampling = self.temperature > 0
            kwargs = dict(max_new_tokens=self.max_new_tokens, do_sample=sampling, pad_token_id=tokenizer.pad_token_id)
            if sampling:
                kwargs.update(temperature=self.temperature, top_k=self.top_k)
            with torch.inference_mode():
                generated = lm.generate(**batch, **kwargs)
        except Exception as exc:  # noqa: BLE001 - one bad batch must not lose the others
            log.exception("local teacher batch failed")
            error = f"generation failed: {type(exc).__name__}: {exc}"
            return [TeacherResponse(r.key, None, 0, 0, cached=False, error=error) for r in requests]
        new = generated[:, batch["input_ids"].shape[1] :].cpu().tolist()
        prompt_tokens = batch["attention_mask"].sum(dim=1).cpu().tolist()
        out = []
        for request, ids, n_prompt in zip(requests, new, prompt_tokens):
            n_new = next((j + 1 for j, t in enumerate(ids) if t in eos_ids), len(ids))
            text = tokenizer.decode(ids[:n_new], skip_special_tokens=True)
            out.append(TeacherResponse(request.key, text, int(n_prompt), int(n_new), cached=False))
        return out
