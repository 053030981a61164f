"""Stage 0: the dataset files — record formats, streaming readers, the offset index,
writers, and the checks of validate and filter."""
