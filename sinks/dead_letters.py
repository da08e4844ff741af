"""Dead letters as JSON lines: one object per malformed record, with reason and a bounded copy."""

import apache_beam as beam
import orjson


def to_json_line(dead_letter) -> str:
    return orjson.dumps(dead_letter._asdict()).decode()


class WriteDeadLetters(beam.PTransform):
    """Writes dead letters to one JSON-lines file at `path`."""

    def __init__(self, path: str):
        super().__init__()
        self._path = path

    def expand(self, dead_letters):
        return (
            dead_letters
            | "ToJson" >> beam.Map(to_json_line)
            | "Write" >> beam.io.WriteToText(self._path, shard_name_template="", num_shards=1))
