"""Teachers for rationale synthesis: one interface (base.Teacher), three backends.

    transformers  a local model (folder, GGUF, pkg:, hub id), batched, CPU or CUDA
    http          an OpenAI-compatible chat-completions server (vLLM, TGI, Ollama, OpenAI)
    replay        precomputed outputs (a jsonl of id/output, or distilling step-by-step's PaLM files)

`build(spec, params)` makes one from a `synthesize.teachers` entry.
"""

from __future__ import annotations

from tasks.params import Synthesize, Teacher as TeacherSpec
from tasks.teachers.base import Options, Result, Teacher, TeacherError
from tasks.teachers.openai_http import HTTPTeacher
from tasks.teachers.replay import ReplayTeacher
from tasks.teachers.transformers import TransformersTeacher

__all__ = ["Options", "Result", "Teacher", "TeacherError", "build", "options"]


def build(spec: TeacherSpec, params: Synthesize) -> Teacher:
    if spec.kind == "transformers":
        return TransformersTeacher(spec.spec, name=spec.name, dtype=params.dtype, batch_size=params.batch_size,
                                   max_batch_tokens=params.max_batch_tokens)
    if spec.kind == "http":
        return HTTPTeacher(spec.base_url, spec.model, name=spec.name, api_key_env=spec.api_key_env,
                           logprobs=spec.logprobs, concurrency=params.concurrency, retries=params.retries,
                           timeout=params.timeout, batch_size=max(params.batch_size, params.concurrency))
    return ReplayTeacher(spec.path, name=spec.name)


def options(params: Synthesize) -> Options:
    return Options(n=params.samples, temperature=params.temperature, max_new_tokens=params.max_new_tokens,
                   scores=params.confidence, topk=params.topk_logprobs, seed=params.seed)
