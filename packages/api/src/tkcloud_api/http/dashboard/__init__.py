"""The dashboard backend API under /api/v1: JSON, snake_case, cursor-paginated lists."""
