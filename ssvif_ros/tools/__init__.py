"""Command-line tools around the fusion node: a paired-image publisher and an output recorder."""
