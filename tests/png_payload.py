"""An image as the API tests send it: PNG bytes, base64 (A1111's `init_images`, `mask`, `image`)."""

from __future__ import annotations

import base64
import io

from PIL import Image


def png64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()
