"""Engine API models as msgspec Structs, named and spelled as the Engine API spells them."""
