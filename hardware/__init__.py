"""Hardware interface layer: servo bus protocols over pyserial and the robot abstraction.

Device-side: imports numpy and pyserial only, never torch or mujoco.
"""
