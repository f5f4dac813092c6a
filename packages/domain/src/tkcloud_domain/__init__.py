"""The centre of telemetry-kit cloud: entities, value objects, domain errors, the EventSchema.

Nothing here does I/O or knows a framework; msgspec is allowed because the event schema is a
wire contract.
"""
