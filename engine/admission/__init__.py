"""A request's way in: checked and made a job (request, variations), then waiting its turn (queue)."""
