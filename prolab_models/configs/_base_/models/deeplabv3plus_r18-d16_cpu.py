# The ResNet-18 DeepLabV3+ at output stride 16 (DeepLabV3+'s own training stride): the last stage
# dilated instead of the last two, ASPP rates 6, 12, 18 as in the paper. Half the CPU time of D8.
_base_ = ['./deeplabv3plus_r18-d8_cpu.py']
model = dict(
    backbone=dict(strides=(1, 2, 2, 1), dilations=(1, 1, 1, 2)),
    decode_head=dict(dilations=(1, 6, 12, 18)))
