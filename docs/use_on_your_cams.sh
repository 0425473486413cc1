orand-addon inspect amn_cams/                                   # format, classes, sizes, value ranges, problems
orand-addon fuse --cams-a amn_cams/ --cams-b mct_cams/ --out fused.h5          # kinds or, and, mean
orand-addon evaluate --pred fused.h5:or --gt VOC2012/SegmentationClassAug --sweep 0.05:0.60:0.01
orand-addon train --store fused.h5 --out runs/orandnet          # ImageNet VGG16 weights; writes model.pt
orand-addon predict --store fused.h5 --checkpoint runs/orandnet/model.pt      # kind orandnet
orand-addon refine --store fused.h5 --kind orandnet --images VOC2012/JPEGImages   # ImageNet ResNet-50 weights
orand-addon evaluate --pred fused.h5:masks --gt VOC2012/SegmentationClassAug --json masks.json
orand-addon train-seg --images VOC2012/JPEGImages --masks fused.h5 --gt VOC2012/SegmentationClassAug \
    --out runs/deeplab                                          # ImageNet ResNet-101; scale schedule 8:2,4:2,2:2
orand-addon segment --checkpoint runs/deeplab/model.pt --images VOC2012/JPEGImages \
    --ids VOC2012/ImageSets/Segmentation/val.txt --gt VOC2012/SegmentationClassAug --out runs/deeplab/val
orand-addon export --store fused.h5 --kind orandnet --to irn --out orandnet_cams/   # for IRN/AMN's own scripts
