//! CUDA runtime for lucebox. (Skeleton; the runtime work fills it.)
