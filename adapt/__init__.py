"""Device-side few-shot adaptation (numpy + onnxruntime only; never torch or mujoco)."""
