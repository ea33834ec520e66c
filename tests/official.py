"""The official parameter counts of the paper's recipes, in one place for the tests (docs/recipes.md#parameter-counts:
counted from the fairseq modules and arch defaults of facebookresearch/mega). Without the token embedding for token
inputs (the vocabulary of the binarized fairseq data differs from ours), everything for real-valued inputs."""

OFFICIAL_PARAMS = {
    "lra_listops": 600_658, "lra_listops_chunk": 578_170,
    "lra_text": 957_204, "lra_text_chunk": 926_212,
    "lra_retrieval": 1_451_806, "lra_retrieval_chunk": 1_405_318,
    "lra_image": 2_839_096, "lra_image_chunk": 2_824_760,
    "lra_pathfinder": 1_386_874, "lra_pathfinder_chunk": 1_376_122,
    "lra_pathx": 381_948, "lra_pathx_chunk": 283_644,
    "sc_raw": 343_134, "sc_raw_chunk": 343_134,
    "sc_raw_big": 475_890, "sc_raw_big_chunk": 475_890,
}  # fmt: skip
