"""The shared core of the data layer: records, image reading, the resumable sampler and the prepared-dataset
contract."""
