"""Stage parameters as pydantic models: one definition for the CLI, the flows and the deployments.

Defaults run the demo. Validation happens before any work starts, and its messages name
the parameter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from prolab_models.dataset_catalog import DATASET_CATALOG
from tasks.class_names import check_distinct

LOCAL_LLM = "local"
OPENAI_BASE_URL = "https://api.openai.com/v1"
# Cosine below which a description is unexpressed by the trained properties: under the least
# similar member of every property of the mapped GPT-3.5 label spaces (demo K=16: 0.44, CamVid
# K=24: 0.49; all-MiniLM-L6-v2), over unrelated phrases ("a cat" 0.19-0.21, "a plate of
# spaghetti" 0.19). It depends on the embedder (BGE's cosines run higher), so it is an option.
SIMILARITY_FLOOR = 0.4


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DescribeParams(StrictModel):
    """Where the class descriptions come from: a descriptor file, or an LLM."""

    dataset: str | None = Field(None, description=f"a known dataset ({', '.join(DATASET_CATALOG)}): its classes, in "
                                                  f"label order (default: demo, unless a descriptors file is given)")
    descriptors: Path | None = Field(None, description="import this {class: [description, ...]} JSON file")
    llm: str = Field(LOCAL_LLM, description="'local' (the embedded model), 'openai', or an OpenAI-compatible base URL")
    model: str | None = Field(None, description="model name at the endpoint (default: the embedded model for 'local', "
                                                "gpt-3.5-turbo for 'openai', and for a URL the one model its /models "
                                                "lists)")
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the API key")
    concurrency: int = Field(4, ge=1, le=64, description="LLM calls in flight at once")
    max_retries: int = Field(6, ge=0, le=20, description="times one LLM call is retried after a connection error, "
                                                         "a timeout or a 429/5xx, with exponential backoff")
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


class VerifyParams(StrictModel):
    """Which descriptions are kept: each rule's threshold (``None`` turns a rule off).

    The defaults flag at most 8 % of the paper's GPT-3.5 lines on each of its four datasets
    (7.4 % of ADE20K's, 7.9 % of COCO-Stuff's, 5.0 % of Pascal Context's, 3.2 % of
    Cityscapes'; all-MiniLM-L6-v2; benchmarks/RESULTS.md, "label-space quality"). The
    misattributed rule's margin (0.25) and floor (0.6) are set so that other_class, which catches
    lines about another class that the class name alone misses, fits under that bound.
    """

    enabled: bool | None = Field(
        None, description="verify the descriptions (default: on for LLM-written ones, off for a descriptors file)",
        json_schema_extra={"cli": "--verify"})
    keep_flagged: bool = Field(False, description="keep flagged lines in the label space (they stay flagged in "
                                                  "the verify artifact)")
    copied_cosine: float | None = Field(
        0.9, ge=0, le=1,
        description="a line at least this close to a worked-example line of another category is copied")
    flag_questions: bool = Field(True, description="a line holding a question mark is a question (an echo of "
                                                   "the prompt), not a property")
    min_latin_share: float | None = Field(
        0.9, ge=0, le=1,
        description="a line with a smaller share of Latin letters is (partly) in another script than the "
                    "prompt's")
    class_name_cosine: float | None = Field(
        0.85, ge=0, le=1,
        description="a line at least this close to its own class name leaks the name (Label-free CBM: 0.85)")
    misattributed_margin: float | None = Field(
        0.25, ge=0, le=2,
        description="a line this much closer to another class's sentence than to its own is misattributed, ...")
    misattributed_min_cosine: float = Field(
        0.6, ge=-1, le=1,
        description="... when it is at least this close to that sentence (a line about the other class, not a "
                    "generic one that many classes' sentences happen to be nearer to)")
    other_class_margin: float | None = Field(
        0.15, ge=0, le=2,
        description="a line this much closer to another class's descriptions (their mean; the line itself left out "
                    "of its own class's) than to its own class's describes that other class, ...")
    other_class_sentence_margin: float = Field(
        0.18, ge=-2, le=2,
        description="... when it is also this much closer to that class's sentence than to its own class's (a "
                    "generic line sits near many classes' descriptions, not nearer to one class's name)")
    class_sentence: str = Field(
        "a photo of a {}",
        description="how a class name is put into a sentence for the misattributed and other_class rules")
    max_chars: int | None = Field(
        None, ge=1, description="a longer line is too long (off by default; Label-free CBM used 30)")
    near_duplicate_cosine: float | None = Field(
        0.9, ge=0, le=1,
        description="a line at least this close to an earlier kept line of its class is a near-duplicate")

    @field_validator("class_sentence")
    @classmethod
    def _has_slot(cls, value: str) -> str:
        if value.count("{}") != 1:
            raise ValueError(f"class_sentence must hold one '{{}}' for the class name, got {value!r}")
        return value


class EmbedParams(StrictModel):
    embedder: str = Field("all-MiniLM-L6-v2", min_length=1,
                          description="sentence-transformers model: a hub name or a local path")
    batch_size: int = Field(64, ge=1, le=4096)


class ClusterParams(StrictModel):
    k: int = Field(16, ge=1, description="number of properties (the paper: 32 for Cityscapes, 256 for ADE20K)")
    seed: int = Field(0, ge=0, description="k-means random_state")


class RepairParams(StrictModel):
    """When two classes are repaired (the LLM asked what separates them), and for how many rounds."""

    rounds: int | None = Field(
        None, ge=0, le=10, description="ask, verify and re-cluster at most this many times (default: 2 for "
                                        "LLM-written descriptions, 0 (off) for a descriptors file)",
        json_schema_extra={"cli": "--repair-rounds"})
    min_cosine: float = Field(0.8, ge=0, le=1, description="repair a pair whose property sets have at least this "
                                                          "cosine, ...", json_schema_extra={"cli": "--repair-min-cosine"})
    max_hamming: int = Field(1, ge=0, description="... or differ in at most this many properties",
                             json_schema_extra={"cli": "--repair-max-hamming"})


class LabelSpaceParams(StrictModel):
    describe: DescribeParams = DescribeParams()
    verify: VerifyParams = VerifyParams()
    embed: EmbedParams = EmbedParams()
    cluster: ClusterParams = ClusterParams()
    repair: RepairParams = RepairParams()

    @property
    def llm_written(self) -> bool:
        """Whether the descriptions come from an LLM (verify and repair are on by default) or a file."""
        return self.describe.source == "llm"

    @property
    def verifies(self) -> bool:
        return self.verify.enabled if self.verify.enabled is not None else self.llm_written

    @property
    def repair_rounds(self) -> int:
        return self.repair.rounds if self.repair.rounds is not None else (2 if self.llm_written else 0)


# TrainParams' fields that say how many processes train, not what: the commands that only read a
# run (evaluate, predict) take none of them.
PROCESS_LAYOUT = ("nproc_per_node", "nnodes", "launcher")


class TrainParams(StrictModel):
    config: str = Field("demo", min_length=1, description="a config name (demo, camvid, ade20k, ...) or a path")
    data_root: Path | None = Field(None, description="dataset root (default: the config's; the demo is generated)")
    cfg_options: dict[str, Any] = Field(default_factory=dict,
                                        description="mmengine config overrides, as mmseg's --cfg-options: "
                                                    "train_cfg.max_iters=400 on the command line, "
                                                    "{\"train_cfg.max_iters\": 400} in JSON")
    held_out: list[str] = Field(
        default_factory=list,
        description="classes held out of training (their images dropped or their pixels ignored, see "
                    "--held-out-images; their descriptions left out of the label space) and scored in evaluation "
                    "from their descriptions alone: CLASS[,CLASS...]",
        json_schema_extra={"cli_split": ","})
    held_out_images: Literal["drop", "ignore"] = Field(
        "drop", description="with --held-out, the training images that hold a held-out class: 'drop' leaves them out "
                            "of training (ZS3Net's protocol), 'ignore' trains on them with the held-out pixels ignored")
    # The process layout, as torchrun and Slurm name it; one process trains in the task's own process.
    nproc_per_node: int = Field(1, ge=1, description="training processes per node (one per GPU; the CPU configs "
                                                      "train with gloo); more than one are started by the launcher")
    nnodes: int = Field(1, ge=1, description="nodes the training processes run on (launcher slurm)")
    launcher: Literal["pytorch", "slurm"] = Field(
        "pytorch", validate_default=True,
        description="what starts more than one process: 'pytorch' (torchrun, on this node) or 'slurm' (srun, inside "
                    "a Slurm allocation)")

    @field_validator("held_out")
    @classmethod
    def _held_out_distinct(cls, value: list[str]) -> list[str]:
        check_distinct(value)  # "Car" beside "car": a reader could not tell which one is meant
        return value

    @field_validator("launcher")
    @classmethod
    def _one_node_for_torchrun(cls, value: str, info: ValidationInfo) -> str:
        nodes = info.data.get("nnodes", 1)
        if value == "pytorch" and nodes > 1:
            raise ValueError(f"torchrun starts processes on its own node only; nnodes={nodes} needs launcher 'slurm'")
        return value

    @property
    def world_size(self) -> int:
        """How many processes train: the global batch is the config's per-process batch times this."""
        return self.nproc_per_node * self.nnodes


# Calibrated stacking's γ: the seen classes' scores (cosines, in [0, 1]) are lowered by it before the argmax.
CALIBRATION_FIELD = dict(ge=0, le=1, description="with classes scored from words only (--held-out, --classes --add), "
                                                   "lower the trained classes' scores (cosines in [0, 1]) by this "
                                                   "before the argmax, so that the new ones can win (calibrated "
                                                   "stacking); 0 leaves predictions as trained")


class EvaluateParams(StrictModel):
    split: Literal["val", "test"] = Field("val", description="the dataset split to score")
    calibration: float = Field(0.0, **CALIBRATION_FIELD)


class PredictParams(StrictModel):
    """What to predict on (images), and what to ask of them (new classes, properties in words)."""

    images: list[Path] = Field(default_factory=list, description="image files, or directories of images")
    classes: Path | None = Field(
        None, description="new classes to score without retraining: a {class: [description, ...]} JSON file (the "
                          "paper's format), or a JSON list of class names for the LLM to describe (--llm)")
    add: bool = Field(False, description="score the new classes in addition to the trained ones, not instead of them")
    query: list[str] = Field(default_factory=list,
                             description="a property in words (e.g. 'covered in fur'): its nearest properties' maps "
                                         "are written per image; repeat for more")
    floor: float = Field(SIMILARITY_FLOOR, ge=-1, le=1,
                         description="a description less similar (cosine) than this to its nearest trained property "
                                     "is unexpressed")
    top_properties: int = Field(6, ge=1, le=64, description="property maps per image: its most active properties")
    query_properties: int = Field(3, ge=1, le=16, description="nearest properties drawn per query")
    label_space: Path | None = Field(None, description="the label space the run was trained on (default: the run's own)")
    calibration: float = Field(0.0, **CALIBRATION_FIELD)

    @field_validator("query")
    @classmethod
    def _no_blank_query(cls, value: list[str]) -> list[str]:
        for position, text in enumerate(value, start=1):
            if not text.strip():
                raise ValueError(f"query {position} is only whitespace; give a property in words")
        return [text.strip() for text in value]


class EndToEndParams(StrictModel):
    label_space: LabelSpaceParams = LabelSpaceParams()
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()
    predict: PredictParams = PredictParams()
