"""Batches of cloze questions: length bucketing, padding, entity permutation, and the attentive
reader's training stream.

    rng = np.random.default_rng(seed)
    for batch in iterate_batches(train, 64, rng=rng):       # one epoch
        batch = permute_entities(batch, rng, vocab.entity_ids)
    stream = training_batches(train, 64, seed=seed, entity_ids=vocab.entity_ids)  # endless

Batches are dicts of numpy arrays: document int32 [B, T], document_mask float32 [B, T],
query int32 [B, Q], query_mask float32 [B, Q], answer int32 [B], example_mask float32 [B];
`trainer_batch` renames the last two to the trainer's 'label' and 'weight'.
"""

from __future__ import annotations

from typing import Iterator, Mapping, Sequence

import numpy as np

from lnrepro.data.cloze_vocab import PAD_ID, EncodedSplit


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def batch_indices(lengths: np.ndarray, batch_size: int, *, rng: np.random.Generator | None = None,
                  chunk_batches: int = 100, drop_remainder: bool = False) -> list[np.ndarray]:
    """Splits range(N) into batches of similar length.

    Examples are taken in a random order (rng given) or in order (rng None), in chunks of
    chunk_batches * batch_size; each chunk is sorted by length (stable) and cut into batches; with
    rng, the order of all batches is then shuffled. Only the very last batch can be short.
    """
    n = len(lengths)
    order = np.arange(n) if rng is None else rng.permutation(n)
    chunk = chunk_batches * batch_size
    batches = []
    for start in range(0, n, chunk):
        part = order[start:start + chunk]
        part = part[np.argsort(lengths[part], kind='stable')]
        batches.extend(part[i:i + batch_size] for i in range(0, len(part), batch_size))
    if drop_remainder and batches and len(batches[-1]) < batch_size:
        batches.pop()
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def _pad(sequences: Sequence[np.ndarray], length: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pads with PAD_ID: (ids int32 [B, length], mask float32 [B, length])."""
    ids = np.full((len(sequences), length), PAD_ID, np.int32)
    mask = np.zeros((len(sequences), length), np.float32)
    for row, seq in enumerate(sequences):
        ids[row, :len(seq)] = seq
        mask[row, :len(seq)] = 1.0
    return ids, mask


def _padded_length(longest: int, bucket_width: int, fixed: int | None, what: str) -> int:
    if fixed is None:
        return round_up(max(longest, 1), bucket_width)
    if longest > fixed:
        raise ValueError(f'a {what} has {longest} tokens, more than the fixed length {fixed}')
    return fixed


def make_batch(data: EncodedSplit, indices: np.ndarray, *, bucket_width: int = 32,
               query_bucket_width: int = 16, batch_size: int | None = None,
               document_length: int | None = None,
               query_length: int | None = None) -> dict[str, np.ndarray]:
    """Gathers and pads examples `indices` into one batch (padding at the end of sequences).

    Lengths are rounded up to a multiple of the bucket width (or fixed to document_length /
    query_length), so few distinct shapes reach jit. If batch_size > len(indices), the batch is
    filled up by repeating its first example with example_mask 0: the filler rows are ordinary
    sequences (no all-padding rows that could make a masked softmax divide by zero), and losses and
    metrics must weight by example_mask.

    Returns: document int32 [B, T], document_mask float32 [B, T], query int32 [B, Q],
    query_mask float32 [B, Q], answer int32 [B], example_mask float32 [B] (1 = real example).
    """
    indices = np.asarray(indices)
    real = len(indices)
    if batch_size is not None and batch_size > real:
        indices = np.concatenate([indices, np.full(batch_size - real, indices[0])])
    documents = [data.documents[i] for i in indices]
    queries = [data.queries[i] for i in indices]
    t = _padded_length(max(len(d) for d in documents), bucket_width, document_length, 'document')
    q = _padded_length(max(len(s) for s in queries), query_bucket_width, query_length, 'query')
    document, document_mask = _pad(documents, t)
    query, query_mask = _pad(queries, q)
    example_mask = (np.arange(len(indices)) < real).astype(np.float32)
    return {'document': document, 'document_mask': document_mask, 'query': query,
            'query_mask': query_mask, 'answer': data.answers[indices], 'example_mask': example_mask}


def iterate_batches(data: EncodedSplit, batch_size: int, *,
                    rng: np.random.Generator | None = None, bucket_width: int = 32,
                    query_bucket_width: int = 16, chunk_batches: int = 100,
                    drop_remainder: bool = False, pad_to_batch_size: bool = False,
                    document_length: int | None = None,
                    query_length: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """One pass over `data` in length-bucketed batches (see batch_indices and make_batch).

    Training: pass the run's numpy Generator as rng (examples and batch order shuffled). Validation:
    rng=None gives the same batches in the same order every time. pad_to_batch_size keeps B fixed
    (the last batch filled with example_mask 0 rows); document_length / query_length fix T / Q.
    """
    for idx in batch_indices(data.document_lengths, batch_size, rng=rng,
                             chunk_batches=chunk_batches, drop_remainder=drop_remainder):
        yield make_batch(data, idx, bucket_width=bucket_width,
                         query_bucket_width=query_bucket_width,
                         batch_size=batch_size if pad_to_batch_size else None,
                         document_length=document_length, query_length=query_length)


def permute_entities(batch: Mapping[str, np.ndarray], rng: np.random.Generator,
                     entity_ids: np.ndarray) -> dict[str, np.ndarray]:
    """Relabels entities by one random permutation, consistently in document, query and answer.

    Hermann et al. 2015 / the attentive reader code: entity labels are anonymous, so a fresh
    permutation per TRAINING minibatch stops the model from learning label priors. Not for
    validation. entity_ids: int [K] (e.g. Vocab.entity_ids); id entity_ids[i] becomes
    entity_ids[perm[i]]; every other id (padding, words, @placeholder) is untouched. Returns a new
    dict; the input arrays are not modified.
    """
    entity_ids = np.asarray(entity_ids)
    table = np.arange(int(entity_ids.max()) + 1, dtype=np.int32)
    table[entity_ids] = entity_ids[rng.permutation(len(entity_ids))]

    def relabel(x: np.ndarray) -> np.ndarray:
        return np.where(x < len(table), table[np.minimum(x, len(table) - 1)], x).astype(x.dtype)

    out = dict(batch)
    for key in ('document', 'query', 'answer'):
        out[key] = relabel(np.asarray(batch[key]))
    return out


def trainer_batch(batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The trainer's names (lnrepro.train): 'label' for the answer, 'weight' for real (1) vs
    filler (0) rows."""
    out = {k: v for k, v in batch.items() if k not in ('answer', 'example_mask')}
    out['label'] = batch['answer']
    out['weight'] = batch['example_mask']
    return out


def training_batches(data: EncodedSplit, batch_size: int, *, seed: int, first_update: int = 0,
                     bucket_width: int = 32, entity_ids: np.ndarray | None = None
                     ) -> Iterator[dict[str, np.ndarray]]:
    """The endless training stream from update `first_update` on, in the trainer's names.

    Epoch e's batch order is drawn from (seed, e) and update u's entity permutation from
    (seed, 1, u), so a run resumed at update u sees the batches an uninterrupted run would.
    Batches are full (each epoch's remainder dropped). entity_ids: the ids to permute in every
    batch (Vocab.entity_ids), or None to leave entities as they are.
    """
    per_epoch = len(data) // batch_size
    if per_epoch == 0:
        raise ValueError(f'batch_size {batch_size} exceeds the {len(data)} training questions.')
    update = first_update
    epoch, skip = divmod(first_update, per_epoch)
    while True:
        indices = batch_indices(data.document_lengths, batch_size,
                                rng=np.random.default_rng([seed, epoch]), drop_remainder=True)
        for idx in indices[skip:]:
            batch = make_batch(data, idx, bucket_width=bucket_width)
            if entity_ids is not None:
                batch = permute_entities(batch, np.random.default_rng([seed, 1, update]),
                                         entity_ids)
            yield trainer_batch(batch)
            update += 1
        epoch, skip = epoch + 1, 0
