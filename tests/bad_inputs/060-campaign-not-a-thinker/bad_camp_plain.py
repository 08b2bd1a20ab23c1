"""Not a thinker."""


class Plain:
    methods = []
