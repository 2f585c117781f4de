"""Generation backends: what a sampler needs from a model, behind one small interface.

    backend = load_backend("hf", "tiny:gpt2")
    ids = backend.encode_prompt(problem.prompt, max_tokens)
    programs = backend.generate([ids], num_samples=4, max_new_tokens=96, temperature=1.0, top_p=0.95)
    backend.load_weights(state_dict)           # a weight version the learner published

`generate` returns `GeneratedProgram`s: token ids, the behaviour log-probability of each token under the untempered
policy (what the learner's importance weight compares against), the decoded completion and whether the length
limit cut it off. `HFBackend` is transformers' `generate` (seq2seq or causal). Another engine (vLLM for causal
models, say) is a subclass registered in `BACKENDS` and named by ``sampler.backend``; the sampler loop, the rewards
and the learner stay as they are.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from models.generation import GeneratedProgram


class GenerationBackend(ABC):
    tokenizer: Any  # a transformers tokenizer: prompts, rewards' token masks and the learner use the same ids

    @abstractmethod
    def generate(self, prompts: Sequence[Sequence[int]], *, num_samples: int, max_new_tokens: int,
                 temperature: float = 1.0, top_p: float = 0.95, greedy: bool = False) -> list[GeneratedProgram]:
        """``num_samples`` programs per prompt (1 when ``greedy``), grouped by prompt in prompt order."""

    @abstractmethod
    def load_weights(self, state_dict: dict[str, Any]) -> None:
        """Run from now on with these weights (the learner's ``state_dict`` names and shapes)."""

    def encode_prompt(self, text: str, max_tokens: int) -> list[int]:
        from models.encoding import encode_prompt

        return encode_prompt(self.tokenizer, text, max_tokens)


class HFBackend(GenerationBackend):
    """transformers ``generate`` on a policy loaded by `models.load_policy` (hub name, path or tiny preset)."""

    def __init__(self, name_or_path: str, kind: Optional[str] = None) -> None:
        from models.loading import load_policy

        self.policy = load_policy(name_or_path, kind=kind)
        self.policy.model.eval()
        self.tokenizer = self.policy.tokenizer

    def generate(self, prompts: Sequence[Sequence[int]], *, num_samples: int, max_new_tokens: int,
                 temperature: float = 1.0, top_p: float = 0.95, greedy: bool = False) -> list[GeneratedProgram]:
        from models.generation import generate_programs

        return generate_programs(self.policy.model, self.tokenizer, prompts, is_seq2seq=self.policy.is_seq2seq,
                                 num_samples=num_samples, max_new_tokens=max_new_tokens, temperature=temperature,
                                 top_p=top_p, greedy=greedy)

    def load_weights(self, state_dict: dict[str, Any]) -> None:
        self.policy.model.load_state_dict(state_dict)


# ``sampler.backend`` -> class; a new backend is added here and to the Literal of SamplerConfig.backend.
BACKENDS: dict[str, type[GenerationBackend]] = {"hf": HFBackend}


def load_backend(name: str, name_or_path: str, kind: Optional[str] = None) -> GenerationBackend:
    if name not in BACKENDS:
        raise ValueError(f"sampler.backend: unknown generation backend {name!r} (known: {', '.join(sorted(BACKENDS))})")
    return BACKENDS[name](name_or_path, kind=kind)
