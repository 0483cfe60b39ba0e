"""The face stage: detection, landmarks, pose, alignment, region masks and photo quality."""
