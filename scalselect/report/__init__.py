"""What a reader sees: the measures behind the figures, the figures, tables, the
attention gallery and the selection browser."""
