"""Renderers: pure functions from specs to engine documents. They never run anything."""
