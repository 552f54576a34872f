"""The same preparation as a Beam graph (TFDS runs it when DownloadConfig has beam_options or a runner):
decoding and filtering fan out over workers; duplicates are found by grouping on the audio digest across
all splits, so the records, reports and counts equal the single-process build's. A corpus whose listing
itself is heavy (Emilia: every tar shard is read for its members' metadata) is listed by the workers too,
one source each, and split by speaker in the pipeline (`listed_items`)."""

from __future__ import annotations

import json

from data_pipelines.corpora import process as process_lib


def _split_transform(beam, shared, split: str, report_dir):
    """PTransform of one split: its (key, example) pairs; writes its report and counts beside the data."""

    @beam.ptransform_fn
    def transform(pbegin):
        outcomes = shared(pbegin.pipeline) | f"Only_{split}" >> beam.Filter(lambda o: o["split"] == split)
        (outcomes
         | f"Rejected_{split}" >> beam.Filter(lambda o: o["rejected"] is not None)
         | f"Sorted_{split}" >> beam.combiners.ToList()
         | f"Report_{split}" >> beam.Map(_write_report, path=str(report_dir / f"skipped-{split}.jsonl")))
        (outcomes
         | f"Label_{split}" >> beam.Map(process_lib.count_label)
         | f"Count_{split}" >> beam.combiners.Count.PerElement()
         | f"Counts_{split}" >> beam.combiners.ToDict()
         | f"WriteCounts_{split}" >> beam.Map(_write_counts, split=split,
                                              path=str(report_dir / f"filters-{split}.json")))
        return (outcomes
                | f"Kept_{split}" >> beam.Filter(lambda o: o["rejected"] is None)
                | f"Example_{split}" >> beam.Map(lambda o: (o["utt"].utt_id, o["example"])))

    return transform()


def _write_report(outcomes, path):
    from etils import epath

    lines = [process_lib.report_line(o) for o in sorted(outcomes, key=lambda o: o["rank"])]
    epath.Path(path).write_text("".join(json.dumps(r) + "\n" for r in lines))


def _write_counts(labels, split, path):
    from etils import epath

    epath.Path(path).write_text(json.dumps(process_lib.counts_of(split, labels)) + "\n")


def _beam():
    from tensorflow_datasets.core.utils.lazy_imports_utils import apache_beam as beam
    return beam


def listed_items(sources: list[str], read_source, spec, names: tuple[str, ...]):
    """pipeline → PCollection of (rank, split, utterance), each source listed by a worker (`read_source`:
    a module-level function, source → utterances without splits of their own). Splits as `splits.assign`
    makes them: each speaker's utterance count goes into one small table of roles, which every speaker's
    group reads; rank = (split, source, position in it), the single-process listing order."""
    from data_pipelines.corpora import splits as splits_lib
    beam = _beam()
    order = {s: i for i, s in enumerate(names)}

    def list_one(indexed):
        i, source = indexed
        return [((i, j), u) for j, u in enumerate(read_source(source))]

    def split_group(kv, roles):
        speaker, group = kv
        return [((order[split], pos), split, u)
                for split, (pos, u) in splits_lib.split_speaker(list(group), roles[speaker], spec)]

    def listing(pipeline):
        listed = (pipeline
                  | "Sources" >> beam.Create(list(enumerate(sources)))
                  | "ListSources" >> beam.FlatMap(list_one))
        roles = (listed
                 | "Speakers" >> beam.Map(lambda pu: pu[1].speaker)
                 | "UtterancesPerSpeaker" >> beam.combiners.Count.PerElement()
                 | "SpeakerCounts" >> beam.combiners.ToDict()
                 | "Roles" >> beam.Map(splits_lib.speaker_roles, spec=spec))
        return (listed
                | "BySpeaker" >> beam.Map(lambda pu: (pu[1].speaker, pu))
                | "SpeakerGroups" >> beam.GroupByKey()
                | "Split" >> beam.FlatMap(split_group, roles=beam.pvalue.AsSingleton(roles)))

    return listing


def split_transforms(items, config, report_dir, names: tuple[str, ...] | None = None) -> dict:
    """{split: PTransform} for (rank, split, utterance) items: a list listed in the driver, or a function
    pipeline → PCollection (`listed_items`) with the split names it makes. The decoding and the duplicate
    search are one branch of the pipeline that every split's transform reads."""
    beam = _beam()
    if callable(items):
        listing = items
    else:
        names = tuple(sorted({split for _, split, _ in items}))
        listing = lambda pipeline: pipeline | "ListedUtterances" >> beam.Create(items)  # noqa: E731
    cache = {}

    def shared(pipeline):
        if id(pipeline) not in cache:
            outcomes = (listing(pipeline)
                        | "Process" >> beam.Map(process_lib.outcome, config=config))
            if config.dedup:
                kept = (outcomes
                        | "Kept" >> beam.Filter(lambda o: o["rejected"] is None)
                        | "ByDigest" >> beam.Map(lambda o: (o["digest"], o))
                        | "SameAudio" >> beam.GroupByKey()
                        | "DropDuplicates" >> beam.FlatMap(lambda kv: process_lib.drop_duplicates(list(kv[1]))))
                rejected = outcomes | "Rejected" >> beam.Filter(lambda o: o["rejected"] is not None)
                outcomes = (kept, rejected) | "AllOutcomes" >> beam.Flatten()
            cache[id(pipeline)] = outcomes
        return cache[id(pipeline)]

    return {s: _split_transform(beam, shared, s, report_dir) for s in names}
