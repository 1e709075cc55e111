"""The stages that build the label space: describe, verify, embed, cluster, repair; and the
LLM and descriptor-file code they share. Nothing here imports the model half (``tasks.model``),
so building or checking a label space never loads torch's training stack or mmseg."""
