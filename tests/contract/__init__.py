"""Contract tests: the protos, the generated code and the topic table agree."""
