"""A pickle payload that records whether unpickling ran it (for the unsafe-file tests)."""


class Payload:
    ran = False

    def __reduce__(self):
        return (Payload._mark, ())

    @staticmethod
    def _mark():
        Payload.ran = True
        return {}
