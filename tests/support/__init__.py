"""Shared test support: servers, stacks, processes, audio and avatars the test modules use
(test modules never import each other; they import from here or use conftest fixtures)."""
