//! Lowers (Qwen3.5 config, schedule) to CUDA C. (Skeleton; the codegen work fills it.)
