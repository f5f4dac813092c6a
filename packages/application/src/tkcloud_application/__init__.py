"""Use cases of telemetry-kit cloud and the ports (typing.Protocol) they depend on."""
