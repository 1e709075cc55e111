"""Stage parameters as pydantic models: one definition for the CLI, the flows and the deployments.

Defaults run the demo. Validation happens before any work starts, and its messages name
the parameter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

LOCAL_LLM = "local"
OPENAI_BASE_URL = "https://api.openai.com/v1"


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DescribeParams(StrictModel):
    """Where the class descriptions come from: a descriptor file, or an LLM."""

    dataset: str | None = Field(None, description="a known dataset: its classes, in label order "
                                                  "(default: demo, unless a descriptors file is given)")
    descriptors: Path | None = Field(None, description="import this {class: [description, ...]} JSON file")
    llm: str = Field(LOCAL_LLM, description="'local' (the embedded model), 'openai', or an OpenAI-compatible base URL")
    model: str | None = Field(None, description="model name at the endpoint (default: the backend's own)")
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the API key")
    concurrency: int = Field(4, ge=1, le=64, description="LLM calls in flight at once")
    prompt: Literal["few-shot", "aspects"] | None = Field(
        None, description="how the LLM is asked: 'few-shot' (method.md's prompt, for chat models) or 'aspects' "
                          "(one list completion per aspect, for base models; the embedded model's default)")

    @model_validator(mode="before")
    @classmethod
    def _demo_by_default(cls, data: Any) -> Any:
        if isinstance(data, dict) and "dataset" not in data and data.get("descriptors") is None:
            return {**data, "dataset": "demo"}
        return data

    @model_validator(mode="after")
    def _needs_classes(self) -> DescribeParams:
        if self.descriptors is None and self.dataset is None:
            raise ValueError("give a dataset (for its classes) or a descriptors file")
        return self

    @field_validator("llm")
    @classmethod
    def _llm(cls, value: str) -> str:
        if value in (LOCAL_LLM, "openai") or value.startswith(("http://", "https://")):
            return value
        raise ValueError(f"llm must be 'local', 'openai' or an http(s) base URL, got {value!r}")

    @property
    def source(self) -> Literal["import", "llm"]:
        return "import" if self.descriptors is not None else "llm"


class EmbedParams(StrictModel):
    embedder: str = Field("all-MiniLM-L6-v2", min_length=1,
                          description="sentence-transformers model: a hub name or a local path")
    batch_size: int = Field(64, ge=1, le=4096)


class ClusterParams(StrictModel):
    k: int = Field(16, ge=1, description="number of properties (the paper: 32 for Cityscapes, 256 for ADE20K)")
    seed: int = Field(0, ge=0, description="k-means random_state")


class LabelSpaceParams(StrictModel):
    describe: DescribeParams = DescribeParams()
    embed: EmbedParams = EmbedParams()
    cluster: ClusterParams = ClusterParams()


class TrainParams(StrictModel):
    config: str = Field("demo", min_length=1, description="a config name (demo, camvid, ade20k, ...) or a path")
    data_root: Path | None = Field(None, description="dataset root (default: the config's; the demo is generated)")
    cfg_options: dict[str, Any] = Field(default_factory=dict,
                                        description="mmengine config overrides, e.g. {'train_cfg.max_iters': 400}")


class EvaluateParams(StrictModel):
    split: Literal["val", "test"] = Field("val", description="the dataset split to score")


class EndToEndParams(StrictModel):
    label_space: LabelSpaceParams = LabelSpaceParams()
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()
