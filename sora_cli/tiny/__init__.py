"""The workshop of the embedded model sora-tiny, kept apart from the product: the synthetic world of coloured
shapes it is trained on (`world`), the captions that describe that world (`captions`), the judge that scores what a
model drew against its caption (`judge`), and the recipes that train it (`train`, run by `sora train`). The
product's prompt -> MP4 path never imports it."""
