"""Relation descriptions: the data that turns labels into retrievable text."""

from rocmre.descriptions.store import Description, RelationDescriptions, RelationEntry, load_builtin

__all__ = ["Description", "RelationDescriptions", "RelationEntry", "load_builtin"]
